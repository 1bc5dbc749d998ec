//! Test helpers: a seeded product database that also holds the host's role and schema (as an
//! administrator would set them up with `bootstrap_sql`), the real internal-mcp served on port 0,
//! and the host's state connected as its own role.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use demo_backend::seed::{self, SeedOptions};
use internal_host::config::{Config, CredentialKey};
use internal_host::credentials::ActingUser;
use internal_host::database::bootstrap_sql;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use test_harness::TestDatabase;
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

pub const HOST_PASSWORD: &str = "internal-host-test-password";
const READER_PASSWORD: &str = "internal-host-test-reader";
const SIGNING_KEY: &[u8] = b"internal-host test signing key, 32+ bytes long";

/// A fresh copy of the seeded database with the host's role and schema, and the reader's login.
pub async fn seeded_database() -> TestDatabase {
    let database = test_harness::database("internal-host-seeded", async |pool| {
        demo_backend::MIGRATOR
            .run(pool)
            .await
            .map_err(anyhow::Error::from)?;
        let options = SeedOptions {
            days: 1,
            ..SeedOptions::new(
                Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0)
                    .single()
                    .expect("a valid time"),
            )
        };
        seed::seed(pool, &options).await?;
        sqlx::query("ANALYZE").execute(pool).await?;
        sqlx::raw_sql(&bootstrap_sql(HOST_PASSWORD)?)
            .execute(pool)
            .await?;
        anyhow::Ok(())
    })
    .await;
    give_the_reader_a_login().await;
    database
}

/// Roles are cluster-wide: once per process.
pub async fn give_the_reader_a_login() {
    static LOGIN: OnceCell<()> = OnceCell::const_new();
    LOGIN
        .get_or_init(|| async {
            let mut admin = test_harness::admin_connection()
                .await
                .expect("an admin connection");
            sqlx::query(&format!(
                "ALTER ROLE internal_mcp_reader LOGIN PASSWORD '{READER_PASSWORD}'"
            ))
            .execute(&mut admin)
            .await
            .expect("the reader gets a login");
        })
        .await;
}

/// The host's own login on `database`.
pub fn host_options(database: &TestDatabase) -> PgConnectOptions {
    database
        .connect_options
        .clone()
        .username("internal_host")
        .password(HOST_PASSWORD)
}

pub fn signing_key() -> CredentialKey {
    CredentialKey::new(SIGNING_KEY.to_vec()).expect("a long enough key")
}

/// The real internal-mcp on `database`, on a port of its own. Drop the sender to stop it.
pub async fn spawn_internal_mcp(database: &TestDatabase) -> (String, oneshot::Sender<()>) {
    let reader = database
        .connect_options
        .clone()
        .username("internal_mcp_reader")
        .password(READER_PASSWORD);
    let mut config = internal_mcp::Config::new(
        database.connect_options.clone(),
        reader,
        internal_mcp::config::SigningKey::new(SIGNING_KEY.to_vec()).expect("a key"),
    );
    // The harness's server holds every test's database: a shared test server.
    config.allow_reader_in_other_databases = true;
    let state = internal_mcp::AppState::connect(config)
        .await
        .expect("internal-mcp starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = internal_mcp::serve(listener, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    (format!("http://{address}/mcp"), shutdown)
}

/// A host configuration for `database` calling internal-mcp at `url`.
pub fn host_config(database: &TestDatabase, url: &str) -> Config {
    let mut config = Config::new(host_options(database), url.to_owned(), signing_key());
    config.mcp_limits.call_timeout = Duration::from_secs(10);
    config
}

/// The seeded user `handle` (the part of the e-mail before @) of organisation `slug`, with their
/// own role.
pub async fn user(pool: &PgPool, slug: &str, handle: &str) -> ActingUser {
    let (user_id, organization_id, role): (Uuid, Uuid, String) = sqlx::query_as(
        "SELECT u.id, u.organization_id, u.role::text FROM users u
           JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email LIKE $2 || '@%'",
    )
    .bind(slug)
    .bind(handle)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("no user {handle} in {slug}: {error}"));
    ActingUser {
        user_id,
        organization_id,
        role,
    }
}
