//! Test helpers: a fresh database per test (empty, or seeded from a shared template), the real
//! application served on port 0, and request helpers.

#![allow(dead_code)]

use std::sync::OnceLock;

use chrono::{DateTime, DurationRound, Utc};
use demo_backend::domain::kinds::{Role, Scope};
use demo_backend::domain::tokens::{self, NewToken};
use demo_backend::http::{self, AppState, RateLimit};
use demo_backend::seed::{self, SeedOptions, SeedReport};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use test_harness::TestDatabase;
use tokio::sync::oneshot;
use uuid::Uuid;

/// A generous limit, so only the rate-limit tests ever meet it.
pub const TEST_RATE_LIMIT: RateLimit = RateLimit {
    per_minute: 100_000,
    burst: 10_000,
};

/// A migrated, empty database.
pub async fn empty_database() -> TestDatabase {
    test_harness::database("demo-backend-migrated", async |pool| {
        demo_backend::MIGRATOR.run(pool).await
    })
    .await
}

/// What the seeded template was seeded with; the same for every copy in this process.
pub struct Seeded {
    pub options: SeedOptions,
    pub report: SeedReport,
}

static SEEDED: OnceLock<Seeded> = OnceLock::new();

/// A copy of a database seeded with three days of data up to now (seeded once per test process):
/// three, so the window always holds a working day's ordinary deployments, whatever day the tests
/// run on (a one-day window on a weekend holds only the stories' deploys).
pub async fn seeded_database() -> (TestDatabase, &'static Seeded) {
    let database = test_harness::database("demo-backend-seeded-3d", async |pool| {
        demo_backend::MIGRATOR
            .run(pool)
            .await
            .map_err(anyhow::Error::from)?;
        let until = Utc::now().duration_trunc(chrono::Duration::minutes(1))?;
        let options = SeedOptions {
            days: 3,
            ..SeedOptions::new(until)
        };
        let report = seed::seed(pool, &options).await?;
        let _ = SEEDED.set(Seeded { options, report });
        anyhow::Ok(())
    })
    .await;
    (
        database,
        SEEDED
            .get()
            .expect("the seeded template records its seed report"),
    )
}

impl Seeded {
    /// The token of the seeded user with `role` in organisation `slug`.
    pub fn token(&self, slug: &str, role: Role) -> String {
        self.report
            .organizations
            .iter()
            .find(|organization| organization.slug == slug)
            .and_then(|organization| organization.users.iter().find(|user| user.role == role))
            .map(|user| user.token.expose().to_owned())
            .unwrap_or_else(|| panic!("no seeded {role:?} in {slug}"))
    }

    pub fn until(&self) -> DateTime<Utc> {
        self.options.until
    }
}

/// The application served over real HTTP on a port of its own.
pub struct TestApp {
    pub address: String,
    pub db: TestDatabase,
    pub client: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

impl TestApp {
    pub async fn spawn(db: TestDatabase) -> Self {
        Self::spawn_with_rate_limit(db, TEST_RATE_LIMIT).await
    }

    pub async fn spawn_with_rate_limit(db: TestDatabase, rate_limit: RateLimit) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, shutdown_received) = oneshot::channel::<()>();
        let state = AppState::new(db.pool.clone(), rate_limit);
        tokio::spawn(http::serve(listener, state, async move {
            let _ = shutdown_received.await;
        }));
        Self {
            address,
            db,
            client: reqwest::Client::new(),
            _shutdown: shutdown,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A request to `path` (starting with `/`), authenticated with `token` when given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.address));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(token))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` expecting 200 and returns the JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get(path, token).await;
        expect_json(response, StatusCode::OK).await
    }

    /// Creates an organisation with one user of `role` and returns a token with `scopes`.
    pub async fn organization_with_user(&self, slug: &str, role: Role, scopes: &[Scope]) -> String {
        create_organization(self.pool(), slug).await;
        let email = format!("{:?}@{slug}.test", role).to_lowercase();
        create_user(self.pool(), slug, &email, role).await;
        token_for(self.pool(), slug, &email, scopes).await
    }
}

/// Asserts the status and returns the JSON body (printing it when the status is wrong).
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"))
}

/// Asserts a problem+json answer with `status` and `code`, and returns the problem.
pub async fn expect_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let problem = expect_json(response, status).await;
    assert_eq!(content_type, "application/problem+json", "{problem}");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty()),
        "{problem}"
    );
    problem
}

pub async fn create_organization(pool: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $2) RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(slug)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn create_user(pool: &PgPool, slug: &str, email: &str, role: Role) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO users (id, organization_id, email, name, role)
         SELECT $1, id, $3, $3, $4 FROM organizations WHERE slug = $2 RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(slug)
    .bind(email)
    .bind(role)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn token_for(pool: &PgPool, slug: &str, email: &str, scopes: &[Scope]) -> String {
    let secret = tokens::create(
        pool,
        NewToken {
            organization_slug: slug,
            user_email: email,
            name: "test",
            scopes,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    secret.expose().to_owned()
}

/// Row counts of every table that a request could write to, to prove nothing was written.
pub async fn table_counts(pool: &PgPool) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in [
        "organizations",
        "users",
        "api_tokens",
        "services",
        "metric_series",
        "metric_samples",
        "monitors",
        "alerts",
        "incidents",
        "incident_services",
        "incident_events",
        "deployments",
        "idempotency_keys",
    ] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap();
        counts.push((table.to_owned(), count));
    }
    counts
}
