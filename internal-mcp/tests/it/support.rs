//! Test helpers: a database per test copied from a template migrated and seeded once per process
//! (two days of data ending at a fixed time, so the seed's stories are the same in every run), the
//! reader role given a login, the real app served on port 0, credentials, and an rmcp client over
//! real HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use demo_backend::domain::kinds::Role;
use demo_backend::seed::{self, SeedOptions, Story};
use internal_mcp::auth::{CredentialRequest, mint_credential};
use internal_mcp::config::{Config, Endpoint, Limits, SigningKey};
use internal_mcp::{AppState, serve};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use test_harness::TestDatabase;
use test_harness::process::{free_port, spawn, wait_until_ready};
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

pub type Client = RunningService<RoleClient, ()>;

/// The reader role's password in test databases.
pub const READER_PASSWORD: &str = "internal-mcp-test-reader";

/// The end of the seeded data: a Thursday afternoon, fixed so every run sees the same data.
pub fn seed_options() -> SeedOptions {
    SeedOptions {
        days: 2,
        ..SeedOptions::new(
            Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0)
                .single()
                .expect("a valid time"),
        )
    }
}

/// The seed's bad-deploy story of `slug`.
pub fn story(slug: &str) -> Story {
    seed::stories(&seed_options())
        .into_iter()
        .find(|story| story.organization_slug == slug)
        .unwrap_or_else(|| panic!("no story for {slug}"))
}

/// A fresh copy of the seeded database, with the reader role able to log in.
pub async fn seeded_database() -> TestDatabase {
    let database = test_harness::database("internal-mcp-seeded-2d", async |pool| {
        assert_migrator_is_fresh();
        demo_backend::MIGRATOR
            .run(pool)
            .await
            .map_err(anyhow::Error::from)?;
        // The seed gathers the planner statistics the cost check relies on.
        seed::seed(pool, &seed_options()).await?;
        anyhow::Ok(())
    })
    .await;
    give_the_reader_a_login().await;
    database
}

/// demo-backend embeds its migrations when it is compiled; a build older than internal-mcp's
/// migration would run without it, and every start-up check would fail for a confusing reason.
fn assert_migrator_is_fresh() {
    let on_disk = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../demo-backend/migrations"
    ))
    .expect("demo-backend's migrations")
    .filter(|entry| {
        entry.as_ref().is_ok_and(|entry| {
            entry
                .path()
                .extension()
                .is_some_and(|ending| ending == "sql")
        })
    })
    .count();
    assert_eq!(
        demo_backend::MIGRATOR.iter().count(),
        on_disk,
        "demo-backend was compiled before its newest migration existed: `cargo clean -p demo-backend`"
    );
}

/// Roles are cluster-wide: the migration creates `internal_mcp_reader` without a login, and tests
/// give it one, once per process.
async fn give_the_reader_a_login() {
    static LOGIN: OnceCell<()> = OnceCell::const_new();
    LOGIN
        .get_or_init(|| async {
            test_harness::give_role_a_login("internal_mcp_reader", READER_PASSWORD)
                .await
                .expect("the reader gets a login");
        })
        .await;
}

/// The reader's connection options for `database`.
pub fn reader_options(database: &TestDatabase) -> PgConnectOptions {
    database
        .connect_options
        .clone()
        .username("internal_mcp_reader")
        .password(READER_PASSWORD)
}

/// The signing key of every test app.
pub fn signing_key() -> SigningKey {
    SigningKey::new(SIGNING_KEY.as_bytes().to_vec()).expect("a long enough key")
}

const SIGNING_KEY: &str = "internal-mcp test signing key, 32+ bytes long";

/// The limits tests run with: a shorter statement timeout than production, so timeouts are quick.
pub fn test_limits() -> Limits {
    Limits {
        statement_timeout: Duration::from_secs(3),
        ..Limits::DEFAULT
    }
}

/// A configuration for `database` with every endpoint mounted.
pub fn test_config(database: &TestDatabase) -> Config {
    let mut config = Config::new(
        database.connect_options.clone(),
        reader_options(database),
        signing_key(),
    );
    config.limits = test_limits();
    config.reader_connections = 4;
    config.max_calls_per_caller = 2;
    config.max_calls_per_organization = 3;
    // Every test's database on the shared test server is open to the cluster-wide reader role.
    config.allow_reader_in_other_databases = true;
    config
}

/// A seeded user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub email: String,
}

/// The real app, served over HTTP on a port of its own, with its database.
pub struct TestApp {
    pub address: SocketAddr,
    pub database: TestDatabase,
    pub state: AppState,
    _shutdown: oneshot::Sender<()>,
}

impl TestApp {
    /// The app with the test configuration on a fresh seeded database.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The app on a fresh seeded database, with the configuration changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let database = seeded_database().await;
        let mut config = test_config(&database);
        configure(&mut config);
        Self::spawn_on(database, config).await
    }

    pub async fn spawn_on(database: TestDatabase, config: Config) -> Self {
        let state = AppState::connect(config).await.expect("the app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("a local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served_state = state.clone();
        tokio::spawn(async move {
            let _ = serve(listener, served_state, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            address,
            database,
            state,
            _shutdown: shutdown,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    pub fn url(&self, endpoint: Endpoint) -> String {
        endpoint_url(self.address, endpoint)
    }

    /// The seeded user `handle` (the part of the e-mail before @) of organisation `slug`.
    pub async fn user(&self, slug: &str, handle: &str) -> TestUser {
        user(self.pool(), slug, handle).await
    }

    pub async fn organization_id(&self, slug: &str) -> Uuid {
        organization_id(self.pool(), slug).await
    }

    /// A valid credential for `user`, with their own role.
    pub fn credential(&self, user: &TestUser) -> String {
        credential(user)
    }

    /// An initialised rmcp client of `endpoint`, as `credential`.
    pub async fn client_with(
        &self,
        endpoint: Endpoint,
        credential: &str,
    ) -> Result<Client, String> {
        client_at(&self.url(endpoint), credential).await
    }

    /// An initialised rmcp client of `endpoint`, as the seeded user `handle` of `slug`.
    pub async fn client(&self, endpoint: Endpoint, slug: &str, handle: &str) -> Client {
        let user = self.user(slug, handle).await;
        self.client_with(endpoint, &self.credential(&user))
            .await
            .expect("the client connects")
    }
}

/// The internal-mcp binary serving a fresh seeded database with the test configuration, as a child
/// process of its own (killed when dropped), so its own resident memory can be read.
pub struct ServerProcess {
    pub address: SocketAddr,
    pub database: TestDatabase,
    child: tokio::process::Child,
}

impl ServerProcess {
    pub async fn spawn() -> Self {
        let database = seeded_database().await;
        let options = &database.connect_options;
        let reader_url = format!(
            "postgres://internal_mcp_reader:{READER_PASSWORD}@{}:{}/{}",
            options.get_host(),
            options.get_port(),
            database.name
        );
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let timeout_ms = test_limits().statement_timeout.as_millis().to_string();
        let child = spawn(
            &PathBuf::from(env!("CARGO_BIN_EXE_internal-mcp")),
            &[
                "serve",
                "--listen",
                &address.to_string(),
                "--statement-timeout-ms",
                &timeout_ms,
            ],
            &[
                ("DATABASE_URL", database.url.as_str()),
                ("INTERNAL_MCP_READER_URL", reader_url.as_str()),
                (internal_mcp::cli::SIGNING_KEY_ENV, SIGNING_KEY),
                // The harness's server holds every test's database: a shared test server.
                ("INTERNAL_MCP_ALLOW_READER_IN_OTHER_DATABASES", "true"),
                ("RUST_LOG", "warn"),
            ],
        );
        wait_until_ready(
            &format!("http://{address}/healthz"),
            Duration::from_secs(30),
        )
        .await
        .expect("internal-mcp answers its health check");
        Self {
            address,
            database,
            child,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    /// An initialised rmcp client of `endpoint`, as the seeded user `handle` of `slug`.
    pub async fn client(&self, endpoint: Endpoint, slug: &str, handle: &str) -> Client {
        let user = user(self.pool(), slug, handle).await;
        client_at(&endpoint_url(self.address, endpoint), &credential(&user))
            .await
            .expect("the client connects")
    }

    /// The most memory the process has held resident since it started (the kernel's `VmHWM`).
    pub fn peak_resident_bytes(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        status_bytes(&format!("/proc/{pid}/status"), "VmHWM:")
    }
}

/// The seeded user `handle` (the part of the e-mail before @) of organisation `slug`.
pub async fn user(pool: &PgPool, slug: &str, handle: &str) -> TestUser {
    let (id, organization_id, role, email): (Uuid, Uuid, Role, String) = sqlx::query_as(
        "SELECT u.id, u.organization_id, u.role, u.email FROM users u
           JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email LIKE $2 || '@%'",
    )
    .bind(slug)
    .bind(handle)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("no user {handle} in {slug}: {error}"));
    TestUser {
        id,
        organization_id,
        role,
        email,
    }
}

pub async fn organization_id(pool: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_one(pool)
        .await
        .expect("a seeded organisation")
}

/// A valid credential for `user`, with their own role, signed with the tests' key.
pub fn credential(user: &TestUser) -> String {
    mint_credential(
        &signing_key(),
        &CredentialRequest {
            issuer: "internal-host".into(),
            user_id: user.id,
            organization_id: user.organization_id,
            role: user.role,
            lifetime: Duration::from_secs(300),
            single_use: false,
        },
    )
    .expect("a credential")
}

/// The URL of `endpoint` on a server listening at `address`.
fn endpoint_url(address: SocketAddr, endpoint: Endpoint) -> String {
    format!("http://{address}{}", endpoint.path())
}

/// An initialised rmcp client of the MCP endpoint at `url`, as `credential`.
pub async fn client_at(url: &str, credential: &str) -> Result<Client, String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(credential.to_owned()),
    );
    ().serve(transport).await.map_err(|error| error.to_string())
}

/// Calls `tool` with `arguments` (a JSON object); protocol errors fail the test.
pub async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: protocol error {error}"))
}

/// The structured content of a successful call; fails the test with the message otherwise.
pub fn success(result: &CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "expected success, got: {}",
        text(result)
    );
    result
        .structured_content
        .clone()
        .expect("structured content")
}

/// The message of a failed call; fails the test if the call succeeded.
pub fn failure(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected an error, got: {}",
        text(result).chars().take(600).collect::<String>()
    );
    text(result)
}

pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|content| content.as_text().map(|text| text.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value` as an RFC 3339 time.
pub fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("{value} is not a string")),
    )
    .unwrap_or_else(|error| panic!("{value} is not RFC 3339: {error}"))
    .with_timezone(&Utc)
}

/// A fingerprint of every table's contents (row count and a sum of row hashes) plus the reader
/// role's attributes and the hardened functions' privileges, to show that nothing changed.
pub async fn database_fingerprint(pool: &PgPool) -> Vec<(String, i64, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut fingerprint = Vec::new();
    for table in tables {
        if table == "internal_mcp_audit_log" {
            continue; // every call adds a row, by design
        }
        let (rows, hash): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0)::bigint FROM public.\"{table}\" t"
        ))
        .fetch_one(pool)
        .await
        .expect("a table fingerprint");
        fingerprint.push((table, rows, hash));
    }
    let (privileges, hash): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(hashtext(concat_ws('|', r.rolname, r.rolsuper, r.rolbypassrls, r.rolcanlogin,
                    (SELECT proacl::text FROM pg_proc WHERE oid = 'pg_catalog.set_config(text,text,boolean)'::regprocedure)))::bigint), 0)::bigint
           FROM pg_roles r WHERE r.rolname = 'internal_mcp_reader'",
    )
    .fetch_one(pool)
    .await
    .expect("the role fingerprint");
    fingerprint.push(("internal_mcp_reader".into(), privileges, hash));
    fingerprint
}

/// A figure in kilobytes from a `/proc/<pid>/status` file, in bytes.
fn status_bytes(path: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kilobytes| kilobytes * 1024)
        .unwrap_or_else(|| panic!("{field} in {path}"))
}
