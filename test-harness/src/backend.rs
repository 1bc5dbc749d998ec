//! A real demo-backend for tests of the servers in front of it: its binary serving a copy of a
//! database that the binary itself migrated and seeded (once per test process), and the seeded
//! users' tokens as the seed printed them.

use std::sync::OnceLock;
use std::time::Duration;

use crate::TestDatabase;
use crate::process::{binary, free_port, run, spawn, wait_until_ready};
use sqlx::PgPool;
use tokio::process::Child;

/// The end of the seeded data: fixed, so the data (and the incident numbers) never change.
pub const SEED_UNTIL: &str = "2026-01-05T12:00:00Z";

/// One seeded user: organisation slug, e-mail, role, API token and sign-in password.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub organization: String,
    pub email: String,
    pub role: String,
    pub token: String,
    pub password: String,
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

/// The sign-in password of that user.
pub fn password(organization: &str, role: &str) -> String {
    USERS
        .get()
        .and_then(|users| {
            users
                .iter()
                .find(|user| user.organization == organization && user.role == role)
                .map(|user| user.password.clone())
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
    /// The database it serves, for tests that also reach it directly (as internal-mcp does).
    pub database: TestDatabase,
    _process: Child,
}

impl Backend {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra `serve` arguments, e.g. a tight rate limit.
    pub async fn start_with(extra: &[&str]) -> Self {
        let database = crate::database("demo-backend-binary-seeded", prepare).await;
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
            database,
            _process: process,
        }
    }
}

/// Migrates and seeds the template with the real binary, keeping the printed tokens.
async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    let url = crate::url_of(pool)?;
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
        .filter(|columns| columns.len() == 5 && columns[3].starts_with("dmo_"))
        .map(|columns| SeededUser {
            organization: columns[0].to_owned(),
            email: columns[1].to_owned(),
            role: columns[2].to_owned(),
            token: columns[3].to_owned(),
            password: columns[4].to_owned(),
        })
        .collect();
    anyhow::ensure!(!users.is_empty(), "the seed printed no tokens: {printed}");
    let _ = USERS.set(users);
    Ok(())
}
