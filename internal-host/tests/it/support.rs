//! Test helpers: a seeded product database that also holds the host's role and schema (as an
//! administrator would set them up with `bootstrap_sql`), the real internal-mcp served on port 0,
//! and the host's state connected as its own role.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use demo_backend::domain::Tenant;
use demo_backend::domain::incidents::NewIncident;
use demo_backend::domain::kinds::Severity;
use demo_backend::seed::{self, SeedOptions};
use internal_host::agent::TurnContext;
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

/// A fresh copy of a database seeded with `options` (the template `name`, prepared once per
/// process), with the host's role and schema and the reader's login.
pub async fn seeded_with(name: &str, options: SeedOptions) -> TestDatabase {
    let database = test_harness::database(name, async move |pool| {
        demo_backend::MIGRATOR
            .run(pool)
            .await
            .map_err(anyhow::Error::from)?;
        seed::seed(pool, &options).await?;
        sqlx::raw_sql(&bootstrap_sql(HOST_PASSWORD)?)
            .execute(pool)
            .await?;
        anyhow::Ok(())
    })
    .await;
    give_the_reader_a_login().await;
    database
}

/// A fresh copy of the seeded database with the host's role and schema, and the reader's login.
pub async fn seeded_database() -> TestDatabase {
    let options = SeedOptions {
        days: 1,
        ..SeedOptions::new(
            Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0)
                .single()
                .expect("a valid time"),
        )
    };
    seeded_with("internal-host-seeded", options).await
}

/// Roles are cluster-wide: once per process.
pub async fn give_the_reader_a_login() {
    static LOGIN: OnceCell<()> = OnceCell::const_new();
    LOGIN
        .get_or_init(|| async {
            test_harness::give_role_a_login("internal_mcp_reader", READER_PASSWORD)
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

/// The real internal-mcp, served in this process; dropping it stops it.
pub struct InternalMcp {
    state: internal_mcp::AppState,
    _stop: oneshot::Sender<()>,
}

impl InternalMcp {
    /// Waits until the audit records of every call it answered so far are written (it records
    /// reads moments after answering them, off their path).
    pub async fn write_audit_records(&self) {
        self.state.audit().flush().await;
    }
}

/// The real internal-mcp on `database`, on a port of its own, trusting the tests' shared key.
pub async fn spawn_internal_mcp(database: &TestDatabase) -> (String, InternalMcp) {
    let shared_key = internal_mcp::config::SigningKey::new(SIGNING_KEY.to_vec()).expect("a key");
    spawn_internal_mcp_trusting(
        database,
        internal_mcp::config::CredentialPolicy::new(shared_key),
    )
    .await
}

/// The real internal-mcp on `database`, accepting the credentials `credentials` allows.
pub async fn spawn_internal_mcp_trusting(
    database: &TestDatabase,
    credentials: internal_mcp::config::CredentialPolicy,
) -> (String, InternalMcp) {
    let reader = database
        .connect_options
        .clone()
        .username("internal_mcp_reader")
        .password(READER_PASSWORD);
    let mut config = internal_mcp::Config::with_credentials(
        database.connect_options.clone(),
        reader,
        credentials,
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
    let served = state.clone();
    tokio::spawn(async move {
        let _ = internal_mcp::serve(listener, served, async {
            let _ = stopped.await;
        })
        .await;
    });
    (
        format!("http://{address}/mcp"),
        InternalMcp {
            state,
            _stop: shutdown,
        },
    )
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

/// A new conversation of `user`'s, as the web layer creates it.
pub async fn new_conversation(host: &PgPool, user: &ActingUser, title: &str) -> Uuid {
    let conversation_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO conversations (id, organization_id, user_id, title) VALUES ($1, $2, $3, $4)",
    )
    .bind(conversation_id)
    .bind(user.organization_id)
    .bind(user.user_id)
    .bind(title)
    .execute(host)
    .await
    .expect("a conversation");
    conversation_id
}

/// A new running turn of `user`'s in `conversation_id` (as the web layer creates it), and its
/// context.
pub async fn new_turn(
    host: &PgPool,
    conversation_id: Uuid,
    user: &ActingUser,
    question: &str,
) -> TurnContext {
    let turn = TurnContext {
        turn_id: Uuid::new_v4(),
        conversation_id,
        correlation_id: Uuid::new_v4(),
        user: user.clone(),
        question: question.to_owned(),
    };
    sqlx::query(
        "INSERT INTO turns (id, conversation_id, correlation_id, question, status) VALUES ($1, $2, $3, $4, 'running')",
    )
    .bind(turn.turn_id)
    .bind(conversation_id)
    .bind(turn.correlation_id)
    .bind(question)
    .execute(host)
    .await
    .expect("a turn");
    turn
}

/// Opens an incident on `service` as marcus of `slug`, through the product's domain layer.
pub async fn open_incident(pool: &PgPool, slug: &str, service: &str, title: &str) -> Uuid {
    let marcus = user(pool, slug, "marcus").await;
    let service_id: Uuid =
        sqlx::query_scalar("SELECT id FROM services WHERE organization_id = $1 AND name = $2")
            .bind(marcus.organization_id)
            .bind(service)
            .fetch_one(pool)
            .await
            .expect("the service");
    let tenant = Tenant::new(pool.clone(), marcus.organization_id, marcus.user_id);
    let created = tenant
        .create_incident(
            &NewIncident {
                title: title.to_owned(),
                severity: Severity::High,
                summary: String::new(),
                service_ids: vec![service_id],
                alert_ids: Vec::new(),
                commander_id: None,
            },
            None,
        )
        .await
        .expect("the incident opens");
    created.resource.incident.id
}

/// demo-backend's REST API served in process on the test's database, as `handle` of `slug` with
/// a read-write API token: how a person or a host outside the product opens incidents and reads
/// their timeline.
pub struct ProductApi {
    pub url: String,
    token: String,
    organization_slug: String,
    pool: PgPool,
    http: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

impl ProductApi {
    pub async fn start(pool: &PgPool, slug: &str, handle: &str) -> Self {
        let email: String = sqlx::query_scalar(
            "SELECT u.email FROM users u JOIN organizations o ON o.id = u.organization_id
              WHERE o.slug = $1 AND u.email LIKE $2 || '@%'",
        )
        .bind(slug)
        .bind(handle)
        .fetch_one(pool)
        .await
        .expect("the user");
        let token = demo_backend::domain::tokens::create(
            pool,
            demo_backend::domain::tokens::NewToken {
                organization_slug: slug,
                user_email: &email,
                name: "internal-host tests",
                scopes: &[
                    demo_backend::domain::kinds::Scope::Read,
                    demo_backend::domain::kinds::Scope::Write,
                ],
                expires_at: None,
            },
        )
        .await
        .expect("a token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let limit = demo_backend::http::RateLimit {
            per_minute: 100_000,
            burst: 10_000,
        };
        let state = demo_backend::http::AppState::new(pool.clone(), limit);
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(demo_backend::http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            token: token.expose().to_owned(),
            organization_slug: slug.to_owned(),
            pool: pool.clone(),
            http: reqwest::Client::new(),
            _shutdown: shutdown,
        }
    }

    /// `POST /api/v1/incidents` on `service`; the new incident's id.
    pub async fn open_incident(&self, service: &str, title: &str) -> Uuid {
        let service_id: Uuid = sqlx::query_scalar(
            "SELECT s.id FROM services s JOIN organizations o ON o.id = s.organization_id
              WHERE o.slug = $1 AND s.name = $2",
        )
        .bind(&self.organization_slug)
        .bind(service)
        .fetch_one(&self.pool)
        .await
        .expect("the service");
        let response = self
            .http
            .post(format!("{}/api/v1/incidents", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({
                "title": title,
                "severity": "high",
                "service_ids": [service_id],
            }))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        let created: serde_json::Value = response.json().await.expect("JSON");
        created["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(|| panic!("no incident id in {created}"))
    }

    /// The bodies of the notes on the incident's timeline written by `author_prefix@...`, read
    /// through `GET /api/v1/incidents/{id}`.
    pub async fn notes_by(&self, incident_id: Uuid, author_prefix: &str) -> Vec<String> {
        let incident: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/incidents/{incident_id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the API answers")
            .json()
            .await
            .expect("JSON");
        incident["timeline"]
            .as_array()
            .unwrap_or_else(|| panic!("no timeline in {incident}"))
            .iter()
            .filter(|event| {
                event["kind"] == "note"
                    && event["author"]["email"]
                        .as_str()
                        .is_some_and(|email| email.starts_with(&format!("{author_prefix}@")))
            })
            .filter_map(|event| event["body"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The python of the tests' venv (`ops/python-venv.sh` makes it, with the MCP Python SDK; `ops/test`
/// runs it first), for MCP servers written with the SDK.
pub fn python() -> std::path::PathBuf {
    let venv = std::env::var_os("DEMO_PYTHON_VENV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| std::path::PathBuf::from(home).join(".cache/dual-mcp/venv"))
        })
        .expect("DEMO_PYTHON_VENV or HOME is set");
    let python = venv.join("bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import mcp.server.mcpserver"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_sdk,
        "the MCP Python SDK venv is missing at {}: run ops/python-venv.sh (ops/test does)",
        venv.display()
    );
    python
}
