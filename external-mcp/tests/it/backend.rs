//! A real demo-backend per test: its binary serving a copy of a database seeded once per test
//! process, and the seeded users' tokens.

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::PgPool;
use test_harness::TestDatabase;
use test_harness::process::{binary, free_port, run, spawn, wait_until_ready};
use tokio::process::Child;

/// The end of the seeded data: fixed, so the data (and the incident numbers) never change.
pub const SEED_UNTIL: &str = "2026-01-05T12:00:00Z";

/// One seeded user: organisation slug, e-mail, role and API token.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub organization: String,
    pub email: String,
    pub role: String,
    pub token: String,
}

static USERS: OnceLock<Vec<SeededUser>> = OnceLock::new();

/// The token of the first seeded user of `organization` with `role` (viewer, responder, admin).
pub fn token(organization: &str, role: &str) -> String {
    USERS
        .get()
        .and_then(|users| {
            users
                .iter()
                .find(|user| user.organization == organization && user.role == role)
                .map(|user| user.token.clone())
        })
        .unwrap_or_else(|| panic!("no seeded {role} in {organization}; start a Backend first"))
}

/// The e-mail of that user.
pub fn email(organization: &str, role: &str) -> String {
    USERS
        .get()
        .and_then(|users| {
            users
                .iter()
                .find(|user| user.organization == organization && user.role == role)
                .map(|user| user.email.clone())
        })
        .unwrap_or_default()
}

/// demo-backend serving its own copy of the seeded database; killed on drop.
#[derive(Debug)]
pub struct Backend {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _process: Child,
    _database: TestDatabase,
}

impl Backend {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra `serve` arguments, e.g. a tight rate limit.
    pub async fn start_with(extra: &[&str]) -> Self {
        let database = test_harness::database("external-mcp-seeded", prepare).await;
        let program = binary("demo-backend");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut arguments = vec!["serve", "--listen", listen.as_str()];
        arguments.extend_from_slice(extra);
        let process = spawn(
            &program,
            &arguments,
            &[
                ("DATABASE_URL", database.url.as_str()),
                ("RUST_LOG", "warn"),
            ],
        );
        wait_until_ready(&format!("http://{listen}/readyz"), Duration::from_secs(60))
            .await
            .expect("demo-backend starts");
        Self {
            url: format!("http://{listen}"),
            _process: process,
            _database: database,
        }
    }
}

/// Migrates and seeds the template with the real binary, keeping the printed tokens.
async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    let url = test_harness::url_of(pool)?;
    let program = binary("demo-backend");
    let environment = [("DATABASE_URL", url.as_str()), ("RUST_LOG", "warn")];
    run(&program, &["migrate"], &environment).await?;
    let printed = run(
        &program,
        &["seed", "--days", "1", "--until", SEED_UNTIL],
        &environment,
    )
    .await?;
    let users: Vec<SeededUser> = printed
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.len() == 4 && columns[3].starts_with("dmo_"))
        .map(|columns| SeededUser {
            organization: columns[0].to_owned(),
            email: columns[1].to_owned(),
            role: columns[2].to_owned(),
            token: columns[3].to_owned(),
        })
        .collect();
    anyhow::ensure!(!users.is_empty(), "the seed printed no tokens: {printed}");
    let _ = USERS.set(users);
    Ok(())
}

/// A port with nothing listening: "the backend is down".
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A server that accepts connections and never answers; reports each connection's end.
pub async fn black_hole() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (closed, closings) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (url, closings)
}
