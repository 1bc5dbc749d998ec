//! A PostgreSQL server for tests: one container per test process, a fresh database per test.
//!
//! The first test that asks for a database starts PostgreSQL in a container through testcontainers
//! (or uses the server named by [`DATABASE_URL_ENV`]). Every test then gets its own database, created
//! from a *template* that is prepared once per process (migrated, or migrated and seeded), which
//! makes a fresh database cost a file copy instead of a migration run. When the test process exits,
//! the container is removed (or, on an existing server, the databases this process created are
//! dropped). A container left behind by a killed process carries testcontainers' label
//! `org.testcontainers.managed-by=testcontainers`, which `.ci/run` sweeps.
//!
//! ```no_run
//! # async fn example() {
//! let database = test_harness::database("empty", async |_pool| Ok::<(), std::convert::Infallible>(())).await;
//! sqlx::query("SELECT 1").execute(&database.pool).await.unwrap();
//! # }
//! ```

pub mod backend;
pub mod browser;
mod cleanup;
pub mod process;
mod server;

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

pub use server::{DATABASE_URL_ENV, DEFAULT_IMAGE, HarnessError, IMAGE_ENV};

/// A database of its own for one test, already prepared from its template.
#[derive(Debug)]
pub struct TestDatabase {
    /// A small pool connected to this database, as the application would hold one.
    pub pool: PgPool,
    /// Connection options for this database, for code under test that connects by itself
    /// (another role, another pool).
    pub connect_options: PgConnectOptions,
    /// A `postgres://` URL for this database, for child processes configured through `DATABASE_URL`.
    pub url: String,
    /// The database's name on the server.
    pub name: String,
}

/// Returns a fresh database for one test, a copy of the template `template`.
///
/// The template is created once per process the first time its name is asked for: `prepare` runs
/// against it (typically: run migrations, then maybe seed data), after which it is frozen and each
/// call only copies it. Use one name per distinct `prepare`.
///
/// # Panics
/// With a message saying what is missing and how to fix it when Docker is not reachable, the image
/// is missing, or `prepare` fails: a test cannot go on without its database.
pub async fn database<F, E>(template: &str, prepare: F) -> TestDatabase
where
    F: AsyncFnOnce(&PgPool) -> Result<(), E>,
    E: Display,
{
    match try_database(template, prepare).await {
        Ok(database) => database,
        Err(error) => panic!("\n\ntest database unavailable: {error}\n"),
    }
}

/// Like [`database`], but returns the failure instead of panicking.
pub async fn try_database<F, E>(template: &str, prepare: F) -> Result<TestDatabase, HarnessError>
where
    F: AsyncFnOnce(&PgPool) -> Result<(), E>,
    E: Display,
{
    let server = server::shared()?;
    let template_name = prepared_template(server, template, prepare).await?;
    let name = unique_name("test");
    let mut admin = server.admin_connection().await?;
    // The template has connections disabled, so the copy never races a writer.
    sqlx::query(&format!(
        r#"CREATE DATABASE "{name}" TEMPLATE "{template_name}""#
    ))
    .execute(&mut admin)
    .await
    .map_err(HarnessError::database("create a test database"))?;
    admin.close().await.ok();
    cleanup::remember_database(&name);

    let connect_options = server.connect_options().database(&name);
    let pool = small_pool(&connect_options).await?;
    Ok(TestDatabase {
        pool,
        connect_options,
        url: server.database_url(&name),
        name,
    })
}

/// The server's name for template `template`, preparing it on first use in this process.
async fn prepared_template<F, E>(
    server: &server::Server,
    template: &str,
    prepare: F,
) -> Result<String, HarnessError>
where
    F: AsyncFnOnce(&PgPool) -> Result<(), E>,
    E: Display,
{
    static TEMPLATES: Mutex<Option<HashMap<String, Arc<OnceCell<String>>>>> = Mutex::new(None);
    let cell = {
        let mut templates = TEMPLATES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        templates
            .get_or_insert_with(HashMap::new)
            .entry(template.to_owned())
            .or_default()
            .clone()
    };
    cell.get_or_try_init(async || {
        let name = unique_name(&format!("template_{}", sanitize(template)));
        let mut admin = server.admin_connection().await?;
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .map_err(HarnessError::database("create a template database"))?;
        cleanup::remember_database(&name);

        let pool = small_pool(&server.connect_options().database(&name)).await?;
        let prepared = prepare(&pool).await;
        pool.close().await;
        prepared.map_err(|error| HarnessError::Prepare {
            template: template.to_owned(),
            message: error.to_string(),
        })?;

        sqlx::query(&format!(
            r#"ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"#
        ))
        .execute(&mut admin)
        .await
        .map_err(HarnessError::database("freeze the template database"))?;
        admin.close().await.ok();
        Ok(name)
    })
    .await
    .cloned()
}

async fn small_pool(options: &PgConnectOptions) -> Result<PgPool, HarnessError> {
    PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone().disable_statement_logging())
        .await
        .map_err(HarnessError::database("connect to the test database"))
}

/// A database name unique on the server, even when several test processes share it.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}_{}_{count}_{nanos:09}", std::process::id())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect()
}

/// An administrative connection to the server, for tests that create roles or inspect the cluster.
pub async fn admin_connection() -> Result<PgConnection, HarnessError> {
    server::shared()?.admin_connection().await
}

/// Gives the cluster-wide `role` a login with `password`. PostgreSQL refuses two concurrent changes
/// of one role ("tuple concurrently updated"), so every caller, in any test process, takes the same
/// advisory lock first.
pub async fn give_role_a_login(role: &str, password: &str) -> Result<(), HarnessError> {
    let action = "give a role a login";
    let mut admin = admin_connection().await?;
    let mut transaction = admin
        .begin()
        .await
        .map_err(HarnessError::database(action))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('test-harness: ALTER ROLE'))")
        .execute(&mut *transaction)
        .await
        .map_err(HarnessError::database(action))?;
    let role = role.replace('"', "\"\"");
    let password = password.replace('\'', "''");
    sqlx::query(&format!(
        "ALTER ROLE \"{role}\" LOGIN PASSWORD '{password}'"
    ))
    .execute(&mut *transaction)
    .await
    .map_err(HarnessError::database(action))?;
    transaction
        .commit()
        .await
        .map_err(HarnessError::database(action))
}

/// A `postgres://` URL for the database `pool` is connected to, for a child process that must
/// reach the same database (for example to prepare a template with a real binary).
pub fn url_of(pool: &PgPool) -> Result<String, HarnessError> {
    let server = server::shared()?;
    let options = pool.connect_options();
    Ok(server.database_url(options.get_database().unwrap_or("postgres")))
}
