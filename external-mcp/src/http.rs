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
//! - No session state: the transport runs stateless (rmcp's `legacy_session_mode` off, JSON
//!   responses unless a tool sends progress), so any replica behind a load balancer can serve any
//!   request, and each request is authenticated by its own token alone.
//! - Narrower endpoints beside `/mcp`, like GitHub's remote server: `/mcp/readonly`,
//!   `/mcp/x/{toolset}` and `/mcp/x/{toolset}/readonly` offer a subset of what the launch flags
//!   allow, never more (see [`Endpoint`]).
//! - `Host` must be one of `--allowed-hosts`, and a present `Origin` must name one of them
//!   (DNS-rebinding and cross-site protection); rmcp checks `Host` again behind this layer.
//! - `/healthz` answers without any of the above, for load balancers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{HttpSettings, Settings, Toolset};
use crate::credentials::{ApiToken, Caller};
use crate::error::Error;
use crate::oauth::{self, Refusal, ResourceServer};
use crate::server::{CallerSource, ExternalServer, Shared};

/// Where the protected-resource metadata is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// The largest JSON-RPC request body accepted.
const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// One MCP endpoint: which of the configured tools it offers. It can only narrow the launch
/// configuration: a toolset the launch left out has no endpoint, and read-only stays read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Only this toolset (`/mcp/x/{toolset}`), or all configured ones.
    pub toolset: Option<Toolset>,
    /// No write tools (`.../readonly`), whatever the launch allows.
    pub read_only: bool,
}

/// What the HTTP layer shares between requests.
#[derive(Debug)]
struct HttpState {
    shared: Arc<Shared>,
    settings: HttpSettings,
    /// Validates and exchanges OAuth access tokens, when this server has client credentials.
    oauth: Option<ResourceServer>,
}

/// The whole HTTP application: `/mcp` and its narrower endpoints, the protected-resource
/// metadata and `/healthz`. `cancel` ends the requests in flight (used at shutdown).
/// `oauth` validates OAuth access tokens; without it only personal API tokens are accepted.
pub fn router(
    shared: Arc<Shared>,
    settings: HttpSettings,
    oauth: Option<ResourceServer>,
    cancel: &CancellationToken,
) -> Router {
    let mut mcp = Router::new();
    for endpoint in Endpoint::all(&shared.settings) {
        let mcp_config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(settings.allowed_hosts.clone())
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES)
            .with_cancellation_token(cancel.clone())
            .with_sse_keep_alive(Some(Duration::from_secs(15)));
        // Built once per endpoint: stateless serving makes a server value per request.
        let tools = crate::tools::router_for(&endpoint.narrow(&shared.settings));
        let factory_shared = shared.clone();
        let mcp_service = StreamableHttpService::new(
            move || {
                Ok(ExternalServer::with_tools(
                    factory_shared.clone(),
                    CallerSource::PerRequest,
                    tools.clone(),
                ))
            },
            Arc::new(NeverSessionManager::default()),
            mcp_config,
        );
        mcp = mcp.route_service(&endpoint.path(), mcp_service);
    }
    let state = Arc::new(HttpState {
        shared,
        settings,
        oauth,
    });
    let mcp = mcp.layer(middleware::from_fn_with_state(state.clone(), authenticate));
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

/// The OAuth resource server, when this server has client credentials, checked against the
/// authorization server first: start-up fails closed, rather than serving with OAuth tokens
/// refused, when the credentials are wrong or the authorization server never answers.
async fn resource_server(
    shared: &Shared,
    settings: &HttpSettings,
) -> anyhow::Result<Option<ResourceServer>> {
    let Some(credentials) = settings.oauth.clone() else {
        return Ok(None);
    };
    let api_url = shared.api.api_url();
    let resource = oauth::resource_of(&settings.public_url, MCP_PATH);
    let server = ResourceServer::new(credentials, &api_url, resource, &api_url)?;
    server.verify(oauth::STARTUP_WAIT).await.map_err(|error| {
        anyhow::anyhow!(
            "the OAuth authorization server at {api_url} does not accept this server: {error}"
        )
    })?;
    tracing::info!(authorization_server = %api_url, "OAuth access tokens are accepted");
    Ok(Some(server))
}

/// Serves the application on a bound listener until `shutdown` completes; then finishes the
/// requests in flight. With OAuth client credentials it first checks them (see
/// [`resource_server`]).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let oauth = resource_server(&shared, &settings).await?;
    let cancel = CancellationToken::new();
    let app = router(shared, settings, oauth, &cancel);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await?;
    Ok(())
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
            value.push_str(&format!(
                r#", error="invalid_token", error_description="{}""#,
                challenge_text(description)
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
}

impl Endpoint {
    /// Every endpoint the launch settings allow: `/mcp`, `/mcp/readonly` when writes are on, and
    /// `/mcp/x/{toolset}` (with `/readonly`) for each configured toolset.
    pub fn all(settings: &Settings) -> Vec<Endpoint> {
        let toolsets = std::iter::once(None).chain(settings.toolsets.iter().copied().map(Some));
        toolsets
            .flat_map(|toolset| [false, true].map(|read_only| Endpoint { toolset, read_only }))
            .collect()
    }

    /// Its path under the server: `/mcp`, `/mcp/readonly`, `/mcp/x/incidents`, ...
    pub fn path(&self) -> String {
        let mut path = MCP_PATH.to_owned();
        if let Some(toolset) = self.toolset {
            path.push_str("/x/");
            path.push_str(toolset.name());
        }
        if self.read_only {
            path.push_str("/readonly");
        }
        path
    }

    /// The launch settings narrowed to this endpoint (never widened).
    pub fn narrow(&self, settings: &Settings) -> Settings {
        let mut narrowed = settings.clone();
        narrowed.read_only = settings.read_only || self.read_only;
        if let Some(toolset) = self.toolset {
            narrowed.toolsets.retain(|offered| *offered == toolset);
        }
        narrowed
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

/// Validates the bearer token of this very request with the API and hands the caller to the
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
    let digest = token.digest();
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
    request.extensions_mut().insert(Caller { token, identity });
    next.run(request).await
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

/// `text` as RFC 6750 allows inside `error_description`: printable ASCII without `"` and `\\`.
/// Anything else (accented letters, dashes, quotes) becomes `?` or `'`, so the header can always
/// be built; a header value with non-ASCII text cannot, and the challenge used to be lost.
fn challenge_text(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '"' | '\\' => '\'',
            ' ' | '!' | '#'..='~' => character,
            _ => '?',
        })
        .collect()
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
    fn challenges_survive_any_rejection_text() {
        let check = |text: &str, expected: &str| {
            let safe = challenge_text(text);
            assert_eq!(safe, expected);
            assert!(HeaderValue::from_str(&safe).is_ok(), "{safe}");
        };
        check("token expired", "token expired");
        check("jeton refusé — expiré", "jeton refus? ? expir?");
        check(r#"a "quoted" \ path"#, "a 'quoted' ' path");
        check("line\nbreak\ttab", "line?break?tab");
    }

    #[test]
    fn endpoints_only_narrow_the_launch_settings() {
        let settings = crate::tools::all_tools_settings();
        let paths: Vec<String> = Endpoint::all(&settings)
            .iter()
            .map(Endpoint::path)
            .collect();
        assert!(paths.contains(&"/mcp".to_owned()));
        assert!(paths.contains(&"/mcp/readonly".to_owned()));
        assert!(paths.contains(&"/mcp/x/incidents/readonly".to_owned()));
        let mut narrow = settings.clone();
        narrow.read_only = true;
        narrow.toolsets = vec![Toolset::Alerts];
        let endpoints = Endpoint::all(&narrow);
        assert_eq!(endpoints.len(), 4);
        for endpoint in endpoints {
            let narrowed = endpoint.narrow(&narrow);
            assert!(narrowed.read_only, "{}", endpoint.path());
            assert_eq!(narrowed.toolsets, vec![Toolset::Alerts]);
        }
        let incidents = Endpoint {
            toolset: Some(Toolset::Incidents),
            read_only: false,
        };
        assert!(
            incidents.narrow(&narrow).toolsets.is_empty(),
            "never widened"
        );
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
