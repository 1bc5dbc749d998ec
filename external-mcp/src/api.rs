//! A small typed client of the product's public REST API (`/api/v1`, described by
//! `/api/v1/openapi.json`), with only the fields this server uses.
//!
//! Every call carries the caller's own token. Failures become [`Error`]s decoded from the API's
//! problem+json answers. Calls are retried on 429 and 503 with backoff, honouring `Retry-After`
//! up to a cap; the retry is safe because the API refuses a rate-limited request before doing
//! anything, creations carry an `Idempotency-Key` that is reused on retry, and acknowledging or
//! resolving twice is refused by the incident's state machine. A 429 also holds back the caller's
//! other requests until the wait is over (per token, so one user never slows another).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::config::ApiOptions;
use crate::credentials::{ApiToken, TokenDigest};
use crate::error::Error;

/// The API client shared by every caller; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: Url,
    options: ApiOptions,
    /// Per token: no request before this instant (set by a 429's `Retry-After`).
    held_until: Arc<Mutex<HashMap<TokenDigest, Instant>>>,
}

/// The API client acting for one caller, within one MCP request (whose cancellation it honours).
#[derive(Debug, Clone)]
pub struct CallerApi {
    client: ApiClient,
    token: ApiToken,
    cancel: CancellationToken,
}

/// One page of a list; `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub user: MeUser,
    pub organization: MeOrganization,
    pub token: MeToken,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeUser {
    pub name: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeOrganization {
    pub slug: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeToken {
    pub scopes: Vec<String>,
}

/// A service with its current health.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub team: String,
    pub tier: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub links: Vec<ServiceLink>,
    pub owner: Option<UserSummary>,
    pub health: ServiceHealth,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceLink {
    pub title: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserSummary {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceHealth {
    /// `healthy`, `degraded` or `critical`.
    pub status: String,
    pub firing_alerts: i64,
    pub open_incidents: i64,
    pub error_rate: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub request_rate: Option<f64>,
    pub as_of: Option<DateTime<Utc>>,
}

/// A metric series of a service with its latest value.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricSeries {
    pub name: String,
    pub unit: String,
    #[serde(default)]
    pub description: String,
    pub latest_value: Option<f64>,
    pub latest_at: Option<DateTime<Utc>>,
}

/// An aggregated time series (`GET /services/{id}/metrics/{metric}`).
#[derive(Debug, Clone, Deserialize)]
pub struct RangeResult {
    pub step_seconds: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub value: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    pub id: Uuid,
    pub monitor_name: String,
    pub service_id: Uuid,
    pub service_name: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub incident_id: Option<Uuid>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Incident {
    pub id: Uuid,
    pub number: i64,
    pub reference: String,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    pub severity: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    pub commander: Option<UserSummary>,
    pub created_by: Option<UserSummary>,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub services: Vec<ServiceReference>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceReference {
    pub id: Uuid,
    pub name: String,
}

/// An incident with its linked alerts and timeline.
#[derive(Debug, Clone, Deserialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    #[serde(default)]
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// `opened`, `acknowledged`, `resolved`, `note` or `alert_linked`.
    pub kind: String,
    pub author: Option<UserSummary>,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    pub id: Uuid,
    pub service_name: String,
    pub version: String,
    pub commit_sha: String,
    pub deployed_by: String,
    pub status: String,
    #[serde(default)]
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The body of `POST /api/v1/incidents`.
#[derive(Debug, Clone, Serialize)]
pub struct NewIncident {
    pub title: String,
    pub severity: String,
    pub summary: String,
    pub service_ids: Vec<Uuid>,
    pub alert_ids: Vec<Uuid>,
}

/// The filters a list endpoint takes, as query pairs (absent ones left out).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pairs: Vec<(&'static str, String)>,
}

/// The error body of every API failure (RFC 9457 problem+json with a `code`).
#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(default)]
    detail: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    field: Option<String>,
}

impl ListQuery {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name=value` when `value` is present.
    pub fn with(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.pairs.push((name, value.to_string()));
        }
        self
    }

    /// Adds the page size and cursor.
    pub fn page(self, limit: u32, cursor: Option<&str>) -> Self {
        self.with("limit", Some(limit)).with("cursor", cursor)
    }
}

impl ApiClient {
    pub fn new(base_url: Url, options: ApiOptions) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("external-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::UnexpectedResponse {
                detail: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            http,
            base_url,
            options,
            held_until: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Where the API is, as shown in messages (origin and path, never a query).
    pub fn api_url(&self) -> String {
        let mut shown = self.base_url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        shown.as_str().trim_end_matches('/').to_owned()
    }

    /// The client acting for `token` within a request that `cancel` can abandon.
    pub fn for_caller(&self, token: ApiToken, cancel: CancellationToken) -> CallerApi {
        CallerApi {
            client: self.clone(),
            token,
            cancel,
        }
    }

    /// `GET /api/v1/me`: who `token` belongs to. Used to validate tokens.
    pub async fn me(&self, token: &ApiToken, cancel: &CancellationToken) -> Result<Me, Error> {
        self.for_caller(token.clone(), cancel.clone())
            .get(&["me"], &ListQuery::new())
            .await
    }

    /// `base/api/v1/<segments...>`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base_url.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| Error::UnexpectedResponse {
                    detail: format!("the API URL {} cannot take a path", self.api_url()),
                })?;
            path.pop_if_empty().push("api").push("v1").extend(segments);
        }
        Ok(url)
    }

    fn held_until(&self, digest: &TokenDigest) -> Option<Instant> {
        let held = self
            .held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.get(digest)
            .copied()
            .filter(|until| *until > Instant::now())
    }

    fn hold(&self, digest: TokenDigest, wait: Duration) {
        let mut held = self
            .held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        let until = now + wait;
        let entry = held.entry(digest).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }
}

impl CallerApi {
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub async fn services(&self, query: &ListQuery) -> Result<Page<Service>, Error> {
        self.get(&["services"], query).await
    }

    pub async fn service(&self, id: Uuid) -> Result<Service, Error> {
        self.get(&["services", &id.to_string()], &ListQuery::new())
            .await
    }

    pub async fn metric_series(&self, service_id: Uuid) -> Result<Vec<MetricSeries>, Error> {
        self.get(
            &["services", &service_id.to_string(), "metrics"],
            &ListQuery::new(),
        )
        .await
    }

    /// One metric aggregated per step over `[from, to)`; `aggregation` is avg, min, max or p95.
    pub async fn metric_range(
        &self,
        service_id: Uuid,
        metric: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_minutes: i64,
        aggregation: &str,
    ) -> Result<RangeResult, Error> {
        let query = ListQuery::new()
            .with("from", Some(from.to_rfc3339()))
            .with("to", Some(to.to_rfc3339()))
            .with("step", Some(format!("{step_minutes}m")))
            .with("aggregation", Some(aggregation));
        self.get(
            &["services", &service_id.to_string(), "metrics", metric],
            &query,
        )
        .await
    }

    pub async fn alerts(&self, query: &ListQuery) -> Result<Page<Alert>, Error> {
        self.get(&["alerts"], query).await
    }

    pub async fn incidents(&self, query: &ListQuery) -> Result<Page<Incident>, Error> {
        self.get(&["incidents"], query).await
    }

    pub async fn incident(&self, id: Uuid) -> Result<IncidentDetail, Error> {
        self.get(&["incidents", &id.to_string()], &ListQuery::new())
            .await
    }

    /// An incident by its number in the organisation (42 for INC-42): one indexed lookup.
    pub async fn incident_by_number(&self, number: i32) -> Result<IncidentDetail, Error> {
        self.get(
            &["incidents", "by-number", &number.to_string()],
            &ListQuery::new(),
        )
        .await
    }

    pub async fn deployments(&self, query: &ListQuery) -> Result<Page<Deployment>, Error> {
        self.get(&["deployments"], query).await
    }

    /// Opens an incident; `idempotency_key` is one per logical call, reused by retries.
    pub async fn create_incident(
        &self,
        body: &NewIncident,
        idempotency_key: &str,
    ) -> Result<IncidentDetail, Error> {
        self.send(
            Method::POST,
            &["incidents"],
            &ListQuery::new(),
            Some(body),
            Some(idempotency_key),
        )
        .await
    }

    pub async fn acknowledge_incident(&self, id: Uuid) -> Result<IncidentDetail, Error> {
        let path = ["incidents", &id.to_string(), "acknowledge"];
        self.send::<(), _>(Method::POST, &path, &ListQuery::new(), None, None)
            .await
    }

    pub async fn resolve_incident(
        &self,
        id: Uuid,
        note: Option<&str>,
    ) -> Result<IncidentDetail, Error> {
        let path = ["incidents", &id.to_string(), "resolve"];
        let body = note.map(|note| serde_json::json!({ "note": note }));
        self.send(Method::POST, &path, &ListQuery::new(), body.as_ref(), None)
            .await
    }

    /// Adds a note; `idempotency_key` is one per logical call, reused by retries.
    pub async fn add_note(
        &self,
        id: Uuid,
        body: &str,
        idempotency_key: &str,
    ) -> Result<TimelineEvent, Error> {
        let path = ["incidents", &id.to_string(), "notes"];
        let body = serde_json::json!({ "body": body });
        self.send(
            Method::POST,
            &path,
            &ListQuery::new(),
            Some(&body),
            Some(idempotency_key),
        )
        .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &[&str], query: &ListQuery) -> Result<T, Error> {
        self.send::<(), T>(Method::GET, path, query, None, None)
            .await
    }

    /// Sends one logical call, retrying on 429 and 503 within the configured limits.
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &ListQuery,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<T, Error> {
        let client = &self.client;
        let url = client.endpoint(path)?;
        let digest = self.token.digest();
        let mut attempt = 1;
        loop {
            if let Some(until) = client.held_until(&digest) {
                self.pause(until.saturating_duration_since(Instant::now()))
                    .await?;
            }
            let mut request = client
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(self.token.expose())
                .header(header::ACCEPT, "application/json")
                .query(&query.pairs);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let outcome = tokio::select! {
                () = self.cancel.cancelled() => return Err(Error::Cancelled),
                outcome = request.send() => outcome,
            };
            let response = match outcome {
                Ok(response) => response,
                Err(error) => return Err(self.transport_error(&error)),
            };
            let status = response.status();
            if status.is_success() {
                let bytes = tokio::select! {
                    () = self.cancel.cancelled() => return Err(Error::Cancelled),
                    bytes = response.bytes() => bytes.map_err(|error| self.transport_error(&error))?,
                };
                return serde_json::from_slice(&bytes).map_err(|error| Error::UnexpectedResponse {
                    detail: format!("{} {}: {error}", method, path.join("/")),
                });
            }
            let retry_after = retry_after(response.headers());
            let problem: Problem = response.json().await.unwrap_or(Problem {
                detail: status.canonical_reason().unwrap_or("error").to_owned(),
                code: String::new(),
                field: None,
            });
            let retryable = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if !retryable || attempt >= client.options.max_attempts {
                return Err(self.status_error(status, problem, retry_after));
            }
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            if wait > client.options.max_retry_wait {
                return Err(self.status_error(status, problem, retry_after));
            }
            tracing::info!(%status, attempt, wait_ms = wait.as_millis() as u64, path = %path.join("/"), "retrying an API call");
            if status == StatusCode::TOO_MANY_REQUESTS {
                client.hold(digest, wait);
            }
            self.pause(wait).await?;
            attempt += 1;
        }
    }

    async fn pause(&self, wait: Duration) -> Result<(), Error> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::Cancelled),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> Error {
        let api_url = self.client.api_url();
        if error.is_timeout() {
            return Error::Timeout {
                api_url,
                seconds: self.client.options.timeout.as_secs(),
            };
        }
        if error.is_connect() {
            return Error::Unreachable {
                api_url,
                detail: "connection refused or failed".into(),
            };
        }
        // reqwest's message names the URL, which carries no secret; the token is in a header.
        Error::Unreachable {
            api_url,
            detail: error.to_string(),
        }
    }

    fn status_error(
        &self,
        status: StatusCode,
        problem: Problem,
        retry_after: Option<Duration>,
    ) -> Error {
        let detail = problem.detail;
        match status.as_u16() {
            401 => Error::TokenRejected {
                api_url: self.client.api_url(),
                detail,
            },
            403 => Error::MissingScope { detail },
            404 => Error::NotFound { detail },
            409 => Error::Conflict { detail },
            429 => Error::RateLimited {
                retry_after_seconds: retry_after.map_or(1, |wait| wait.as_secs().max(1)),
            },
            400 | 413 | 415 | 422 => Error::Refused {
                detail: match problem.field {
                    Some(field) if !detail.starts_with(&field) => format!("{field}: {detail}"),
                    _ => detail,
                },
            },
            500..=599 => Error::Unavailable {
                api_url: self.client.api_url(),
                status: status.as_u16(),
                detail: if problem.code.is_empty() {
                    detail
                } else {
                    format!("{detail} ({})", problem.code)
                },
            },
            other => Error::UnexpectedResponse {
                detail: format!("HTTP {other}: {detail}"),
            },
        }
    }
}

/// `Retry-After` in seconds (the API never sends the date form).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// 250 ms, 500 ms, 1 s, ... plus up to 25% jitter, so retries of parallel calls spread out.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt.saturating_sub(1).min(6));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(
            backoff(1) >= Duration::from_millis(250) && backoff(1) < Duration::from_millis(320)
        );
        assert!(backoff(3) >= Duration::from_secs(1));
        assert!(backoff(100) <= Duration::from_secs(20));
    }

    #[test]
    fn endpoints_keep_a_base_path_and_encode_segments() {
        let client = ApiClient::new(
            Url::parse("https://example.com/monitoring/").unwrap(),
            ApiOptions::default(),
        )
        .unwrap();
        let url = client.endpoint(&["services", "a b/c", "metrics"]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://example.com/monitoring/api/v1/services/a%20b%2Fc/metrics"
        );
        let bare = ApiClient::new(
            Url::parse("http://127.0.0.1:8080").unwrap(),
            ApiOptions::default(),
        )
        .unwrap();
        assert_eq!(
            bare.endpoint(&["me"]).unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/me"
        );
        assert_eq!(bare.api_url(), "http://127.0.0.1:8080");
    }
}
