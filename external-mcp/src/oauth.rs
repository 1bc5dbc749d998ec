//! external-mcp as an OAuth resource server (MCP authorization spec 2025-11-25).
//!
//! An OAuth access token (`dmoat_...`, issued by the product's authorization server) is accepted
//! only when it was issued for this server: external-mcp asks the authorization server
//! (introspection, RFC 7662, authenticated with its own client credentials), which reports a
//! token active only to the client serving that token's resource, and external-mcp checks the
//! audience again itself. It never passes that token on: it trades it (token exchange, RFC 8693)
//! for a short-lived API token of the same user and scopes, cached by the received token's
//! digest until shortly before it expires, and calls the REST API with that.
//!
//! A personal API token (`dmo_...`) is not an OAuth token: the user gave it to this server to
//! call the API with, as with GitHub's personal access tokens, and it is used as given.
//!
//! Introspection runs on every request, so a revoked token is refused at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Deserialize;
use tokio::sync::OnceCell;
use url::Url;

use crate::credentials::{ApiToken, TokenDigest};
use crate::error::Error;
use crate::tools::WRITE_TOOLS;

/// Tokens starting with this are OAuth access tokens of the product's authorization server.
pub const ACCESS_TOKEN_PREFIX: &str = "dmoat_";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// An exchanged token is used until this long before it expires, then exchanged again.
const EXPIRY_MARGIN: Duration = Duration::from_secs(15);
/// Above this many cached exchanged tokens, expired ones are dropped (all, if none expired).
const MAX_CACHED_EXCHANGES: usize = 10_000;
/// How long start-up waits for the authorization server to answer (see [`ResourceServer::verify`]).
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// What start-up introspects: a token that cannot exist, which must come back inactive.
const PROBE_TOKEN: &str = "dmoat_start-up-check-of-the-resource-server";
/// The largest JSON-RPC body inspected for step-up.
pub const MAX_INSPECTED_BODY: usize = 4 * 1024 * 1024;

/// external-mcp's own client credentials at the authorization server.
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// Validates OAuth tokens for this resource and exchanges them for API tokens.
#[derive(Debug)]
pub struct ResourceServer {
    credentials: ClientCredentials,
    /// The authorization server's issuer (the API's origin).
    issuer: String,
    /// This server's resource identifier, `<public-url>/mcp`.
    resource: String,
    /// The REST API's resource identifier, `<api-url>/api/v1`.
    api_resource: String,
    http: reqwest::Client,
    endpoints: OnceCell<Endpoints>,
    exchanged: Mutex<HashMap<TokenDigest, (ApiToken, Instant)>>,
}

/// The caller behind an OAuth token.
#[derive(Debug, Clone)]
pub struct OAuthCaller {
    /// The exchanged API token: what the tools call the API with.
    pub api_token: ApiToken,
    /// The scopes granted to the received token.
    pub scopes: Vec<String>,
}

/// Why an OAuth token was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Unknown, expired, revoked, or issued for another resource: a 401 challenge.
    InvalidToken(&'static str),
    /// The authorization server could not be asked.
    Unavailable(Error),
}

#[derive(Debug, Deserialize)]
struct Endpoints {
    introspection_endpoint: String,
    token_endpoint: String,
}

#[derive(Debug, Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Exchanged {
    access_token: String,
    expires_in: u64,
}

impl ResourceServer {
    pub fn new(
        credentials: ClientCredentials,
        issuer: &str,
        resource: String,
        api_url: &str,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Error::Unreachable {
                api_url: issuer.to_owned(),
                detail: error.to_string(),
            })?;
        Ok(Self {
            credentials,
            issuer: issuer.trim_end_matches('/').to_owned(),
            resource,
            api_resource: format!("{}/api/v1", api_url.trim_end_matches('/')),
            http,
            endpoints: OnceCell::new(),
            exchanged: Mutex::new(HashMap::new()),
        })
    }

    /// Checks that the authorization server answers and accepts this server's client
    /// credentials, by introspecting a token that cannot exist. Waits up to `wait` while the
    /// authorization server cannot be reached or fails; a refusal of the credentials (or of
    /// the request) ends at once.
    pub async fn verify(&self, wait: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + wait;
        loop {
            match self.probe().await {
                Ok(()) => return Ok(()),
                Err(
                    error @ Error::Unavailable {
                        status: 400..=499, ..
                    },
                ) => return Err(error),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    tracing::info!(%error, "waiting for the OAuth authorization server");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn probe(&self) -> Result<(), Error> {
        let endpoints = self.endpoints().await?;
        let introspection: Introspection = self
            .post(
                &endpoints.introspection_endpoint,
                &[("token", PROBE_TOKEN), ("token_type_hint", "access_token")],
            )
            .await?
            .json()
            .await
            .map_err(|error| self.unexpected(error))?;
        if introspection.active {
            return Err(Error::UnexpectedResponse {
                detail: "the authorization server calls a token that cannot exist active".into(),
            });
        }
        Ok(())
    }

    /// Whether `token` is an OAuth access token (rather than a personal API token).
    pub fn is_oauth_token(token: &ApiToken) -> bool {
        token.expose().starts_with(ACCESS_TOKEN_PREFIX)
    }

    /// Validates an OAuth token for this resource and gives the API token to call with.
    pub async fn accept(&self, token: &ApiToken) -> Result<OAuthCaller, Refusal> {
        let endpoints = self.endpoints().await.map_err(Refusal::Unavailable)?;
        let introspection: Introspection = self
            .post(
                &endpoints.introspection_endpoint,
                &[
                    ("token", token.expose()),
                    ("token_type_hint", "access_token"),
                ],
            )
            .await
            .map_err(Refusal::Unavailable)?
            .json()
            .await
            .map_err(|error| Refusal::Unavailable(self.unexpected(error)))?;
        if !introspection.active {
            return Err(Refusal::InvalidToken(
                "the token is unknown, expired, revoked, or not issued for this server",
            ));
        }
        if introspection.aud.as_deref() != Some(self.resource.as_str()) {
            tracing::warn!(token = %token.digest().short(), "refused an OAuth token issued for another resource");
            return Err(Refusal::InvalidToken(
                "the token was issued for another resource",
            ));
        }
        let scopes: Vec<String> = introspection
            .scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let api_token = self.api_token_for(token, endpoints).await?;
        Ok(OAuthCaller { api_token, scopes })
    }

    /// The cached exchanged token for `token`, or a new one.
    async fn api_token_for(
        &self,
        token: &ApiToken,
        endpoints: &Endpoints,
    ) -> Result<ApiToken, Refusal> {
        let digest = token.digest();
        if let Some(cached) = self.cached(&digest) {
            return Ok(cached);
        }
        let response = self
            .http
            .post(&endpoints.token_endpoint)
            .basic_auth(
                urlencode(&self.credentials.client_id),
                Some(urlencode(&self.credentials.client_secret)),
            )
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", token.expose()),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("resource", &self.api_resource),
            ])
            .send()
            .await
            .map_err(|error| Refusal::Unavailable(self.unreachable(error)))?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            // The subject token stopped being active between introspection and exchange.
            return Err(Refusal::InvalidToken("the token is no longer active"));
        }
        if !response.status().is_success() {
            return Err(Refusal::Unavailable(Error::Unavailable {
                api_url: self.issuer.clone(),
                status: response.status().as_u16(),
                detail: "the token exchange failed (are this server's client credentials right?)"
                    .into(),
            }));
        }
        let exchanged: Exchanged = response
            .json()
            .await
            .map_err(|error| Refusal::Unavailable(self.unexpected(error)))?;
        let api_token: ApiToken = exchanged
            .access_token
            .parse()
            .map_err(|detail: String| Refusal::Unavailable(Error::UnexpectedResponse { detail }))?;
        let usable_for = Duration::from_secs(exchanged.expires_in).saturating_sub(EXPIRY_MARGIN);
        if !usable_for.is_zero() {
            self.remember(digest, api_token.clone(), Instant::now() + usable_for);
        }
        tracing::debug!(token = %digest.short(), "exchanged an OAuth token for an API token");
        Ok(api_token)
    }

    fn cached(&self, digest: &TokenDigest) -> Option<ApiToken> {
        let exchanged = self
            .exchanged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        exchanged
            .get(digest)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    fn remember(&self, digest: TokenDigest, token: ApiToken, until: Instant) {
        let mut exchanged = self
            .exchanged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if exchanged.len() >= MAX_CACHED_EXCHANGES {
            let now = Instant::now();
            exchanged.retain(|_, (_, until)| now < *until);
            if exchanged.len() >= MAX_CACHED_EXCHANGES {
                exchanged.clear();
            }
        }
        exchanged.insert(digest, (token, until));
    }

    /// The authorization server's endpoints, from its RFC 8414 metadata (fetched once).
    async fn endpoints(&self) -> Result<&Endpoints, Error> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/oauth-authorization-server", self.issuer);
                let response = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|error| self.unreachable(error))?;
                if !response.status().is_success() {
                    return Err(Error::Unavailable {
                        api_url: self.issuer.clone(),
                        status: response.status().as_u16(),
                        detail: "no OAuth authorization server metadata".into(),
                    });
                }
                response
                    .json::<Endpoints>()
                    .await
                    .map_err(|error| self.unexpected(error))
            })
            .await
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<reqwest::Response, Error> {
        let response = self
            .http
            .post(url)
            .basic_auth(
                urlencode(&self.credentials.client_id),
                Some(urlencode(&self.credentials.client_secret)),
            )
            .form(form)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        if !response.status().is_success() {
            return Err(Error::Unavailable {
                api_url: self.issuer.clone(),
                status: response.status().as_u16(),
                detail: "the authorization server refused this server's request (are its client credentials right?)".into(),
            });
        }
        Ok(response)
    }

    fn unreachable(&self, error: reqwest::Error) -> Error {
        Error::Unreachable {
            api_url: self.issuer.clone(),
            detail: error.without_url().to_string(),
        }
    }

    fn unexpected(&self, error: reqwest::Error) -> Error {
        Error::UnexpectedResponse {
            detail: format!("the authorization server's answer: {}", error.without_url()),
        }
    }
}

/// RFC 6749 section 2.3.1: client credentials are form-urlencoded inside HTTP Basic.
fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Whether a JSON-RPC body (one message or a batch) calls a tool that changes something: with a
/// token lacking `write`, such a request gets a 403 `insufficient_scope` challenge (step-up).
pub fn calls_a_write_tool(body: &Bytes) -> bool {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let messages = match message {
        serde_json::Value::Array(messages) => messages,
        single => vec![single],
    };
    messages.iter().any(|message| {
        message["method"] == "tools/call"
            && message["params"]["name"]
                .as_str()
                .is_some_and(|name| WRITE_TOOLS.contains(&name))
    })
}

/// The step-up challenge (403 `insufficient_scope`) for a write tool called without `write`.
pub fn insufficient_scope(metadata_url: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let mut response = (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "error": "insufficient_scope",
            "advice": "This tool changes data: authorize again granting the `write` scope.",
        })),
    )
        .into_response();
    let challenge = format!(
        r#"Bearer error="insufficient_scope", scope="read write", resource_metadata="{metadata_url}", error_description="this tool needs the write scope""#
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Whether `scopes` allow the write tools.
pub fn can_write(scopes: &[String]) -> bool {
    scopes
        .iter()
        .any(|scope| scope == "write" || scope == "admin")
}

/// `<public-url>/mcp`, this server's resource identifier.
pub fn resource_of(public_url: &Url, mcp_path: &str) -> String {
    format!("{}{mcp_path}", public_url.as_str().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tool_calls_are_recognised_in_messages_and_batches() {
        let check = |body: &str, expected: bool| {
            assert_eq!(
                calls_a_write_tool(&Bytes::from(body.to_owned())),
                expected,
                "{body}"
            );
        };
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"resolve_incident"}}"#,
            true,
        );
        check(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_incident_note"}}]"#,
            true,
        );
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_incidents"}}"#,
            false,
        );
        check(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, false);
        check("not json", false);
    }

    #[test]
    fn client_secrets_never_print() {
        let credentials = ClientCredentials {
            client_id: "external-mcp".into(),
            client_secret: "s3cret".into(),
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
