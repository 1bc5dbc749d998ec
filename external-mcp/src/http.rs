//! The Streamable HTTP transport: `/mcp` for remote MCP hosts, acting as an OAuth 2.0 protected
//! resource (RFC 9728) as the MCP authorization spec asks of a resource server.
//!
//! - Every request to `/mcp` must carry `Authorization: Bearer <demo API token>`. Without one, or
//!   with one the API rejects (`GET /api/v1/me`), the answer is 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="<public-url>/.well-known/oauth-protected-resource"`.
//!   Validations are cached for a minute by the token's SHA-256 digest; the token itself is never
//!   logged or stored.
//! - The validated caller travels with the request (its extensions) to the tools, which use that
//!   token and nothing else: two users' requests never share credentials or cached data.
//! - A session is bound to the token that opened it: the same `Mcp-Session-Id` with another token
//!   is answered 404.
//! - `Host` must be one of `--allowed-hosts`, and a present `Origin` must name one of them
//!   (DNS-rebinding and cross-site protection); rmcp checks `Host` again behind this layer.
//! - `/healthz` answers without any of the above, for load balancers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::credentials::{ApiToken, Caller, TokenDigest};
use crate::error::Error;
use crate::oauth::{self, Refusal, ResourceServer};
use crate::server::{CallerSource, ExternalServer, Shared};

/// Where the protected-resource metadata is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// The session header of Streamable HTTP.
const SESSION_HEADER: &str = "mcp-session-id";
/// Sessions remembered for token binding; the oldest are forgotten beyond this.
const MAX_BOUND_SESSIONS: usize = 10_000;

/// What the HTTP layer shares between requests.
#[derive(Debug)]
struct HttpState {
    shared: Arc<Shared>,
    settings: HttpSettings,
    /// Which token opened each session (by digest), and when.
    sessions: Mutex<HashMap<String, (TokenDigest, Instant)>>,
    /// Validates and exchanges OAuth access tokens, when this server has client credentials.
    oauth: Option<ResourceServer>,
}

/// The whole HTTP application: `/mcp`, the protected-resource metadata and `/healthz`.
/// `cancel` ends every MCP session (used at shutdown).
pub fn router(shared: Arc<Shared>, settings: HttpSettings, cancel: CancellationToken) -> Router {
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(settings.allowed_hosts.clone())
        .with_cancellation_token(cancel)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    let factory_shared = shared.clone();
    let mcp_service = StreamableHttpService::new(
        move || {
            Ok(ExternalServer::new(
                factory_shared.clone(),
                CallerSource::PerRequest,
            ))
        },
        LocalSessionManager::default().into(),
        mcp_config,
    );
    let oauth = settings.oauth.clone().and_then(|credentials| {
        let api_url = shared.api.api_url();
        let resource = oauth::resource_of(&settings.public_url, MCP_PATH);
        ResourceServer::new(credentials, &api_url, resource, &api_url)
            .inspect_err(|error| tracing::error!(%error, "OAuth tokens will not be accepted"))
            .ok()
    });
    let state = Arc::new(HttpState {
        shared,
        settings,
        sessions: Mutex::new(HashMap::new()),
        oauth,
    });
    let mcp = Router::new()
        .nest_service(MCP_PATH, mcp_service)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route(METADATA_PATH, get(protected_resource_metadata))
        .route(
            &format!("{METADATA_PATH}{MCP_PATH}"),
            get(protected_resource_metadata),
        )
        .merge(mcp)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            check_host_and_origin,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Serves the application on a bound listener until `shutdown` completes; then ends the MCP
/// sessions and finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let app = router(shared, settings, cancel.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
}

impl HttpState {
    fn metadata_url(&self) -> String {
        format!(
            "{}{METADATA_PATH}",
            self.settings.public_url.as_str().trim_end_matches('/')
        )
    }

    fn resource(&self) -> String {
        format!(
            "{}{MCP_PATH}",
            self.settings.public_url.as_str().trim_end_matches('/')
        )
    }

    /// A 401 that tells the client where to learn how to authenticate.
    fn challenge(&self, rejection: Option<&str>) -> Response {
        let mut value = format!(
            r#"Bearer resource_metadata="{}", scope="read write""#,
            self.metadata_url()
        );
        if let Some(description) = rejection {
            let description = description.replace(['"', '\\'], "'");
            value.push_str(&format!(
                r#", error="invalid_token", error_description="{description}""#
            ));
        }
        let error = match rejection {
            Some(description) => description.to_owned(),
            None => Error::MissingBearer.to_string(),
        };
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": error,
                "advice": "Configure your MCP host to send your demo API token as `Authorization: Bearer <token>`.",
            })),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    fn session_owner(&self, session: &str) -> Option<TokenDigest> {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.get(session).map(|(digest, _)| *digest)
    }

    fn bind_session(&self, session: String, digest: TokenDigest) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sessions.len() >= MAX_BOUND_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, bound_at))| *bound_at)
                .map(|(session, _)| session.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(session, (digest, Instant::now()));
    }

    fn forget_session(&self, session: &str) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.remove(session);
    }
}

/// RFC 9728 protected-resource metadata: this resource, the authorization server that issues its
/// tokens (the product itself), and how to present them.
async fn protected_resource_metadata(State(state): State<Arc<HttpState>>) -> Response {
    let api = state.shared.api.api_url();
    axum::Json(serde_json::json!({
        "resource": state.resource(),
        "authorization_servers": [api],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["read", "write"],
        "resource_name": "Demo Monitoring MCP server",
        "resource_documentation": format!("{api}/api/v1/openapi.json"),
    }))
    .into_response()
}

/// Refuses requests whose `Host` is not allowed, or whose `Origin` names another host.
async fn check_host_and_origin(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = &state.settings.allowed_hosts;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str().to_owned())
        });
    if !host
        .as_deref()
        .is_some_and(|host| authority_is_allowed(host, allowed))
    {
        tracing::warn!(
            host = host.as_deref().unwrap_or(""),
            "refused a request for a host not allowed"
        );
        return Error::HostNotAllowed.into_response();
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|origin| url::Url::parse(origin).ok())
            .and_then(|origin| {
                let host = origin.host_str()?.to_owned();
                Some(match origin.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            });
        if !origin_host.is_some_and(|host| authority_is_allowed(&host, allowed)) {
            tracing::warn!("refused a request from an Origin not allowed");
            return Error::OriginNotAllowed.into_response();
        }
    }
    next.run(request).await
}

/// Validates the bearer token with the API, binds sessions to it, and hands the caller to the
/// tools through the request's extensions.
async fn authenticate(
    State(state): State<Arc<HttpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer(request.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => return state.challenge(None),
        Err(problem) => return state.challenge(Some(problem)),
    };
    let mut digest = token.digest();
    // An OAuth access token is validated for this resource and exchanged (see `oauth`): from
    // here on the tools only ever see the exchanged API token.
    let mut oauth_scopes = None;
    let token = if ResourceServer::is_oauth_token(&token) {
        let Some(resource_server) = &state.oauth else {
            return state.challenge(Some(
                "this server accepts no OAuth tokens (no client credentials); use a personal API token",
            ));
        };
        match resource_server.accept(&token).await {
            Ok(caller) => {
                oauth_scopes = Some(caller.scopes);
                caller.api_token
            }
            Err(Refusal::InvalidToken(description)) => return state.challenge(Some(description)),
            Err(Refusal::Unavailable(error)) => {
                tracing::warn!(%error, "cannot validate an OAuth token");
                return error.into_response();
            }
        }
    } else {
        token
    };
    // Step-up: a write tool called with a grant lacking `write` gets 403 insufficient_scope.
    if oauth_scopes
        .as_deref()
        .is_some_and(|scopes| !oauth::can_write(scopes))
        && request.method() == Method::POST
    {
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, oauth::MAX_INSPECTED_BODY).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        if oauth::calls_a_write_tool(&body) {
            return oauth::insufficient_scope(&state.metadata_url());
        }
        request = Request::from_parts(parts, axum::body::Body::from(body));
    }
    // Dropped with the request if the client goes away, so no cancellation token of its own.
    let never_cancelled = CancellationToken::new();
    let identity = match state
        .shared
        .identities
        .validate(&state.shared.api, &token, &never_cancelled)
        .await
    {
        Ok(identity) => identity,
        Err(Error::TokenRejected { detail, .. }) => {
            tracing::info!(token = %digest.short(), "refused a token the API rejected");
            return state.challenge(Some(&format!("the API rejected this token: {detail}")));
        }
        Err(error) => {
            tracing::warn!(%error, "cannot validate a token");
            return error.into_response();
        }
    };
    if oauth_scopes.is_some() {
        // OAuth tokens are replaced by refresh and step-up mid-session: bind the session to the
        // user rather than to one of their tokens.
        digest = oauth::session_owner(&identity);
    }
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = &session
        && let Some(owner) = state.session_owner(session)
        && owner != digest
    {
        tracing::warn!(token = %digest.short(), "refused a session opened with another token");
        return Error::SessionOfAnotherCaller.into_response();
    }
    let closing = request.method() == Method::DELETE;
    request.extensions_mut().insert(Caller { token, identity });
    let response = next.run(request).await;
    if let Some(opened) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        state.bind_session(opened.to_owned(), digest);
    }
    if closing
        && response.status().is_success()
        && let Some(session) = &session
    {
        state.forget_session(session);
    }
    response
}

/// The bearer token of `Authorization`: none, one, or a malformed header.
fn bearer(headers: &HeaderMap) -> Result<Option<ApiToken>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("the Authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must be `Bearer <token>`");
    }
    token
        .parse::<ApiToken>()
        .map(Some)
        .map_err(|_| "the bearer token is malformed")
}

/// Whether `authority` (`host` or `host:port`) matches an allowed entry (`host` matches any
/// port, `host:port` only that port).
fn authority_is_allowed(authority: &str, allowed: &[String]) -> bool {
    let Some((host, port)) = split_authority(authority) else {
        return false;
    };
    allowed.iter().any(|entry| match split_authority(entry) {
        Some((allowed_host, allowed_port)) => {
            allowed_host == host
                && allowed_port.is_none_or(|allowed_port| Some(allowed_port) == port)
        }
        None => false,
    })
}

fn split_authority(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    // A bare IPv6 address (`::1`) is not an authority; treat it as a host.
    if text.matches(':').count() > 1 && !text.starts_with('[') {
        return Some((text.to_ascii_lowercase(), None));
    }
    let authority: Authority = text.parse().ok()?;
    let host = authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    Some((host, authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_or_without_ports() {
        let allowed = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "mcp.example.com:443".to_owned(),
        ];
        let check = |host: &str, expected: bool| {
            assert_eq!(authority_is_allowed(host, &allowed), expected, "{host}")
        };
        check("localhost", true);
        check("localhost:8090", true);
        check("LOCALHOST:8090", true);
        check("127.0.0.1:1", true);
        check("[::1]:8090", true);
        check("mcp.example.com:443", true);
        check("mcp.example.com:8443", false);
        check("mcp.example.com", false);
        check("evil.example.com", false);
        check("localhost.evil.com", false);
        check("", false);
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let check = |value: &str, expected: Result<Option<&str>, ()>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            let parsed = bearer(&headers);
            assert_eq!(
                parsed
                    .as_ref()
                    .map(|token| token.as_ref().map(ApiToken::expose))
                    .map_err(|_| ()),
                expected,
                "{value}"
            );
        };
        check("Bearer dmo_abc", Ok(Some("dmo_abc")));
        check("bearer dmo_abc", Ok(Some("dmo_abc")));
        check("Basic abc", Err(()));
        check("Bearer", Err(()));
        check("Bearer a b", Err(()));
        assert!(matches!(bearer(&HeaderMap::new()), Ok(None)));
    }
}
