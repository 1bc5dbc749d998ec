//! Sign-in with the product's own OAuth 2.1 authorization server (demo-backend), as one of its
//! pre-registered confidential clients: authorization code with PKCE S256, the code redeemed with
//! the client's secret (HTTP Basic), then `GET /api/v1/me` with the access token to learn who
//! signed in: the user, the organisation and the CURRENT role. The token is issued for the REST
//! API itself (resource `<issuer>/api/v1`, RFC 8707), so the API accepts it directly; no token
//! exchange is needed (that is for resource servers such as external-mcp).
//!
//! The role is re-read later with the refresh token (rotated on every use), so a demoted user loses
//! power; sign-out revokes the refresh token, which ends the whole grant at the server.

use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use crate::config::SignInConfig;
use crate::error::Error;

/// The scope the host asks for: enough to read `/api/v1/me`. The host never calls the REST API
/// for data; it reaches data through internal-mcp with a credential of its own.
pub const SCOPE: &str = "read";

/// The authorization server as this client uses it. Cheap to clone.
#[derive(Clone)]
pub struct OAuthClient {
    client_id: String,
    client_secret: crate::config::ClientSecret,
    issuer: String,
    redirect_uri: String,
    endpoints: Endpoints,
    http: reqwest::Client,
}

/// The endpoints the issuer's metadata (RFC 8414) names.
#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
}

/// Tokens from the token endpoint. Never printed.
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// Who signed in, as the product says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Uuid,
    pub user_name: String,
    pub email: String,
    /// `viewer`, `responder` or `admin`.
    pub role: String,
    pub organization_id: Uuid,
    pub organization_name: String,
}

/// Why a sign-in step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The server refused (an expired code, a revoked grant, a deleted user): sign in again.
    #[error("the sign-in was refused: {0}")]
    Refused(String),
    /// The server could not be reached or answered something unreadable.
    #[error("the sign-in server is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct Me {
    user: MeUser,
    organization: MeOrganization,
}

#[derive(Deserialize)]
struct MeUser {
    id: Uuid,
    name: String,
    email: String,
    role: String,
}

#[derive(Deserialize)]
struct MeOrganization {
    id: Uuid,
    name: String,
}

impl OAuthClient {
    /// Reads the issuer's metadata, trying again for up to `discovery_timeout` (the product may
    /// still be starting); then fails closed: without the server nobody could sign in.
    pub async fn discover(config: &SignInConfig, redirect_uri: String) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Error::Startup(format!("cannot build an HTTP client: {error}")))?;
        let url = format!(
            "{}/.well-known/oauth-authorization-server",
            config.issuer.trim_end_matches('/')
        );
        let deadline = tokio::time::Instant::now() + config.discovery_timeout;
        let endpoints = loop {
            match read_metadata(&http, &url).await {
                Ok(endpoints) => break endpoints,
                Err(problem) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%url, %problem, "waiting for the OAuth server's metadata");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(problem) => {
                    return Err(Error::Startup(format!(
                        "cannot read the OAuth server's metadata at {url} ({problem}); users could not sign in, so the host does not start"
                    )));
                }
            }
        };
        if endpoints.issuer.trim_end_matches('/') != config.issuer.trim_end_matches('/') {
            return Err(Error::Startup(format!(
                "the OAuth metadata at {url} names the issuer {:?}, not {:?}",
                endpoints.issuer, config.issuer
            )));
        }
        Ok(Self {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            issuer: config.issuer.trim_end_matches('/').to_owned(),
            redirect_uri,
            endpoints,
            http,
        })
    }

    /// The issuer, e.g. `http://127.0.0.1:8080`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The REST API's resource identifier, which the token is bound to.
    fn api_resource(&self) -> String {
        format!("{}/api/v1", self.issuer)
    }

    /// Where the browser is sent to sign in.
    pub fn authorization_url(&self, state: &str, code_challenge: &str) -> String {
        let resource = self.api_resource();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", SCOPE)
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &resource)
            .finish();
        let separator = if self.endpoints.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{separator}{query}",
            self.endpoints.authorization_endpoint
        )
    }

    /// Redeems an authorization code with its PKCE verifier.
    pub async fn redeem(&self, code: &str, verifier: &str) -> Result<Tokens, SignInError> {
        let resource = self.api_resource();
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
            ("resource", &resource),
        ])
        .await
    }

    /// Trades the refresh token for new tokens (the old refresh token is spent).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SignInError> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Who the access token belongs to, with their role as it is now.
    pub async fn identity(&self, access_token: &str) -> Result<Identity, SignInError> {
        let response = self
            .http
            .get(format!("{}/api/v1/me", self.issuer))
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|error| SignInError::Unavailable(without_url(&error)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(SignInError::Refused(format!(
                "the product refused the access token ({status})"
            )));
        }
        if !status.is_success() {
            return Err(SignInError::Unavailable(format!(
                "GET /api/v1/me answered {status}"
            )));
        }
        let me: Me = response.json().await.map_err(|error| {
            SignInError::Unavailable(format!("unreadable /api/v1/me: {}", without_url(&error)))
        })?;
        if !matches!(me.user.role.as_str(), "viewer" | "responder" | "admin") {
            return Err(SignInError::Refused(format!(
                "the product names an unknown role {:?}",
                me.user.role
            )));
        }
        Ok(Identity {
            user_id: me.user.id,
            user_name: me.user.name,
            email: me.user.email,
            role: me.user.role,
            organization_id: me.organization.id,
            organization_name: me.organization.name,
        })
    }

    /// Revokes a refresh token (and so its whole grant); failures are logged, not returned: the
    /// session is gone either way.
    pub async fn revoke(&self, refresh_token: &str) {
        let Some(endpoint) = &self.endpoints.revocation_endpoint else {
            return;
        };
        let sent = self
            .http
            .post(endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(&[
                ("token", refresh_token),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(status = %response.status(), "the OAuth server refused to revoke a refresh token")
            }
            Err(error) => {
                tracing::warn!(error = %without_url(&error), "cannot revoke a refresh token")
            }
        }
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Tokens, SignInError> {
        let response = self
            .http
            .post(&self.endpoints.token_endpoint)
            .basic_auth(
                url_encoded(&self.client_id),
                Some(url_encoded(self.client_secret.expose())),
            )
            .form(form)
            .send()
            .await
            .map_err(|error| SignInError::Unavailable(without_url(&error)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| SignInError::Unavailable(without_url(&error)))?;
        if status.is_success() {
            let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|error| {
                SignInError::Unavailable(format!("unreadable token answer: {error}"))
            })?;
            return Ok(Tokens {
                access_token: answer.access_token,
                refresh_token: answer.refresh_token,
            });
        }
        match serde_json::from_slice::<TokenError>(&body) {
            Ok(error) if status.is_client_error() => {
                let description = error.error_description.unwrap_or_default();
                if error.error == "invalid_client" {
                    // The operator's configuration, not the user's doing: say so in the log.
                    tracing::error!(%description, "the OAuth server does not accept this host's client credentials");
                    return Err(SignInError::Unavailable(
                        "the sign-in server does not know this assistant (check its client id and secret)".into(),
                    ));
                }
                Err(SignInError::Refused(format!(
                    "{}: {description}",
                    error.error
                )))
            }
            _ => Err(SignInError::Unavailable(format!(
                "the token endpoint answered {status}"
            ))),
        }
    }
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Tokens(..)")
    }
}

async fn read_metadata(http: &reqwest::Client, url: &str) -> Result<Endpoints, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|error| without_url(&error))?;
    if !response.status().is_success() {
        return Err(format!("it answered {}", response.status()));
    }
    response
        .json::<Endpoints>()
        .await
        .map_err(|error| format!("unreadable metadata: {}", without_url(&error)))
}

/// RFC 6749 section 2.3.1: the client id and secret are form-encoded before Basic encoding.
fn url_encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// reqwest's errors quote the URL, which may carry a code; keep only the reason.
fn without_url(error: &reqwest::Error) -> String {
    let text = error.to_string();
    match error.url() {
        Some(url) => text.replace(url.as_str(), "<url>"),
        None => text,
    }
}
