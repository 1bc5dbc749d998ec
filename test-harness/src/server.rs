//! Finds or starts the PostgreSQL server the tests of this process share.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::core::error::ClientError;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ImageExt, TestcontainersError};
use url::Url;

use crate::cleanup;

/// Environment variable naming an existing PostgreSQL server to use instead of a container, as an
/// administrative URL (a role allowed to create databases), e.g.
/// `postgres://postgres:secret@localhost:5432/postgres`.
pub const DATABASE_URL_ENV: &str = "DEMO_TEST_DATABASE_URL";
/// Environment variable overriding the PostgreSQL image, as `name:tag`.
pub const IMAGE_ENV: &str = "DEMO_POSTGRES_IMAGE";
/// The image the harness starts: the official image's name, which `ops/postgres-image/build.sh`
/// also builds from Debian packages where no registry is reachable.
pub const DEFAULT_IMAGE: &str = "postgres:15-bookworm";

const PASSWORD: &str = "postgres";

/// Why the harness could not provide a database; each message says how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "Docker is not reachable ({detail}). Start the Docker daemon (e.g. `sudo systemctl start docker`), \
         or set {DATABASE_URL_ENV} to an existing PostgreSQL server."
    )]
    DockerUnavailable { detail: String },
    #[error(
        "the PostgreSQL image `{image}` is not present and could not be pulled ({detail}). \
         Without a container registry, build it from Debian packages: `sudo ops/postgres-image/build.sh`."
    )]
    ImageMissing { image: String, detail: String },
    #[error("the PostgreSQL container did not start: {0}")]
    ContainerStart(String),
    #[error("could not {action}: {detail}")]
    Database {
        action: &'static str,
        detail: String,
    },
    #[error("preparing the template `{template}` failed: {message}")]
    Prepare { template: String, message: String },
}

impl HarnessError {
    pub(crate) fn database(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |error| Self::Database {
            action,
            detail: error.to_string(),
        }
    }
}

/// The server this process's tests share.
#[derive(Debug)]
pub(crate) struct Server {
    /// Options of the administrative connection.
    admin: PgConnectOptions,
    /// The same connection as a URL, whose path is replaced to name another database.
    admin_url: Url,
}

impl Server {
    /// A `postgres://` URL for `database` on this server.
    pub(crate) fn database_url(&self, database: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(database);
        url.into()
    }

    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        self.admin.clone()
    }

    pub(crate) async fn admin_connection(&self) -> Result<PgConnection, HarnessError> {
        self.admin
            .clone()
            .disable_statement_logging()
            .connect()
            .await
            .map_err(HarnessError::database("connect to the PostgreSQL server"))
    }
}

/// The shared server, found or started on first use. A failure is remembered, so every later test
/// fails at once with the same message instead of retrying a missing Docker.
pub(crate) fn shared() -> Result<&'static Server, HarnessError> {
    static SERVER: OnceLock<Result<Server, HarnessError>> = OnceLock::new();
    SERVER
        .get_or_init(find_or_start)
        .as_ref()
        .map_err(Clone::clone)
}

fn find_or_start() -> Result<Server, HarnessError> {
    let url = match std::env::var(DATABASE_URL_ENV) {
        Ok(url) => url,
        Err(_) => {
            check_docker_reachable()?;
            let port = start_container()?;
            format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres")
        }
    };
    let invalid = |detail: String| HarnessError::Database {
        action: "use the server's URL",
        detail,
    };
    let admin_url = Url::parse(&url).map_err(|error| invalid(error.to_string()))?;
    let admin: PgConnectOptions = url
        .parse()
        .map_err(|error: sqlx::Error| invalid(error.to_string()))?;
    if std::env::var(DATABASE_URL_ENV).is_ok() {
        cleanup::on_exit_drop_databases(admin.clone());
    }
    Ok(Server { admin, admin_url })
}

/// Fails fast, with a plain message, when the Docker socket is absent or refuses connections.
fn check_docker_reachable() -> Result<(), HarnessError> {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => match host.strip_prefix("unix://") {
            Some(path) => path.to_owned(),
            // A TCP or SSH Docker host is checked by the first request instead.
            None => return Ok(()),
        },
        Err(_) => "/var/run/docker.sock".to_owned(),
    };
    std::os::unix::net::UnixStream::connect(&socket)
        .map(drop)
        .map_err(|error| HarnessError::DockerUnavailable {
            detail: format!("{socket}: {error}"),
        })
}

/// Starts the container on a thread of its own, which keeps it (and the runtime its Docker client
/// lives on) until the process exits. Returns the host port of PostgreSQL.
fn start_container() -> Result<u16, HarnessError> {
    let image = std::env::var(IMAGE_ENV).unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let postgres = Postgres::default()
        .with_password(PASSWORD)
        .with_name(name)
        .with_tag(tag)
        // Durability is worthless in a throwaway container; many parallel tests need connections.
        .with_cmd([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=500",
        ]);

    let (started_sender, started) = mpsc::channel();
    let (stop_sender, stop) = mpsc::channel::<()>();
    let (stopped_sender, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = started_sender.send(Err(HarnessError::ContainerStart(error.to_string())));
                    return;
                }
            };
            let container = match runtime.block_on(postgres.start()) {
                Ok(container) => container,
                Err(error) => {
                    let _ = started_sender.send(Err(classify(&image, error)));
                    return;
                }
            };
            let port = runtime.block_on(container.get_host_port_ipv4(5432));
            let port = port.map_err(|error| HarnessError::ContainerStart(error.to_string()));
            if let Ok(port) = &port {
                // Straight to stderr, past the test runner's capture: the run's log shows the server.
                let _ = writeln!(
                    std::io::stderr(),
                    "test-harness: PostgreSQL container {} ({image}) on 127.0.0.1:{port} for process {}",
                    &container.id()[..12],
                    std::process::id()
                );
            }
            let _ = started_sender.send(port);
            // Wait for the process to exit (see `cleanup`), then remove the container.
            let _ = stop.recv();
            if std::env::var("TESTCONTAINERS_COMMAND").as_deref() != Ok("keep") {
                let _ = runtime.block_on(container.rm());
            }
            let _ = stopped_sender.send(());
        })
        .map_err(|error| HarnessError::ContainerStart(error.to_string()))?;

    let port = started
        .recv()
        .map_err(|_| HarnessError::ContainerStart("the container thread ended".into()))??;
    cleanup::on_exit_stop_container(stop_sender, stopped);
    Ok(port)
}

fn classify(image: &str, error: TestcontainersError) -> HarnessError {
    match error {
        TestcontainersError::Client(ClientError::PullImage { err, .. }) => {
            HarnessError::ImageMissing {
                image: image.to_owned(),
                detail: err.to_string(),
            }
        }
        TestcontainersError::Client(ClientError::Init(err)) => HarnessError::DockerUnavailable {
            detail: err.to_string(),
        },
        other => HarnessError::ContainerStart(other.to_string()),
    }
}

/// How long the exit hook waits for the container to be removed.
pub(crate) const REMOVAL_TIMEOUT: Duration = Duration::from_secs(20);
