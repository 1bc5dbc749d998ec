//! OAuth clients: who they are (pre-registered, or registered dynamically per RFC 7591), which
//! redirect URIs they may use (exact match; loopback with any port, RFC 8252 section 7.3), and how
//! they authenticate at the token, revocation and introspection endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::OAuthServer;
use super::client_documents;
use super::config::{AUTHORIZATION_CODE, REFRESH_TOKEN};
use super::error::OAuthError;
use super::params::{Params, client_address, constant_time_equal};
use super::store::{self, CLIENT_ID_PREFIX, CLIENT_SECRET_PREFIX, RegisteredClientRow};
use crate::domain::tokens;
use crate::http::AppState;

/// At most this many redirect URIs per registered client.
const MAX_REDIRECT_URIS: usize = 10;

/// A client, whichever way it was registered.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// SHA-256 of the secret of a confidential client; `None` for a public one (PKCE only).
    pub secret_hash: Option<[u8; 32]>,
    pub grant_types: Vec<String>,
    /// Resources this client serves as a resource server (pre-registered clients only).
    pub resources_served: Vec<String>,
    /// Whether the operator configured it (shown on the consent page).
    pub pre_registered: bool,
}

impl Client {
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|granted| granted == grant_type)
    }

    /// Whether `requested` is one of the client's redirect URIs.
    pub fn allows_redirect(&self, requested: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_uri_matches(registered, requested))
    }
}

/// Looks a client up by its id: pre-registered, registered (DCR), or an `https://` URL to its
/// metadata document.
pub async fn find(
    server: &OAuthServer,
    state: &AppState,
    client_id: &str,
) -> Result<Option<Client>, OAuthError> {
    if client_documents::is_document_client_id(client_id) {
        let document = server
            .documents
            .get(client_id)
            .await
            .map_err(OAuthError::invalid_client_document)?;
        return Ok(Some(Client {
            client_id: document.client_id.clone(),
            client_name: document.client_name.clone(),
            redirect_uris: document.redirect_uris.clone(),
            secret_hash: None,
            grant_types: vec![AUTHORIZATION_CODE.to_owned(), REFRESH_TOKEN.to_owned()],
            resources_served: Vec::new(),
            pre_registered: false,
        }));
    }
    if let Some(client) = server
        .settings
        .clients
        .iter()
        .find(|client| client.client_id == client_id)
    {
        return Ok(Some(Client {
            client_id: client.client_id.clone(),
            client_name: client.client_name.clone(),
            redirect_uris: client.redirect_uris.clone(),
            secret_hash: Some(client.client_secret_sha256),
            grant_types: client.grant_types.clone(),
            resources_served: client.resources_served.clone(),
            pre_registered: true,
        }));
    }
    let Some(row) = store::registered_client(state.db(), client_id).await? else {
        return Ok(None);
    };
    Ok(Some(Client {
        client_id: row.client_id,
        client_name: row.client_name,
        redirect_uris: row.redirect_uris,
        secret_hash: row
            .client_secret_hash
            .and_then(|hash| <[u8; 32]>::try_from(hash.as_slice()).ok()),
        grant_types: vec![AUTHORIZATION_CODE.to_owned(), REFRESH_TOKEN.to_owned()],
        resources_served: Vec::new(),
        pre_registered: false,
    }))
}

/// Authenticates the client of a token, revocation or introspection request: HTTP Basic
/// (`client_secret_basic`), `client_id` + `client_secret` in the body (`client_secret_post`), or
/// `client_id` alone for a public client. Anything wrong is `invalid_client`.
pub async fn authenticate(
    server: &OAuthServer,
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(basic_credentials(value.as_bytes()).ok_or_else(|| {
            OAuthError::invalid_client(
                "the Authorization header must be HTTP Basic client credentials",
            )
        })?),
        None => None,
    };
    let body_id = params.single("client_id")?;
    let body_secret = params.single("client_secret")?;
    let (client_id, secret) = match basic {
        Some((id, secret)) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            if body_id.is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_client(
                    "client_id does not match the credentials",
                ));
            }
            (id, Some(secret))
        }
        None => {
            let id = body_id
                .ok_or_else(|| OAuthError::invalid_client("the client is not identified"))?;
            (id.to_owned(), body_secret.map(str::to_owned))
        }
    };
    let client = find(server, state, &client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    match (&client.secret_hash, secret) {
        (Some(expected), Some(secret)) if constant_time_equal(expected, &tokens::hash(&secret)) => {
            Ok(client)
        }
        (None, None) => Ok(client),
        (None, Some(_)) => Err(OAuthError::invalid_client("a public client has no secret")),
        (Some(_), _) => Err(OAuthError::invalid_client("client authentication failed")),
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 section 2.3.1).
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |part: &str| {
        url::form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

/// Whether a redirect URI may be registered: absolute, without fragment, and `https`, loopback
/// `http` (native apps, RFC 8252 section 7.3), or a private-use scheme named like a reversed
/// domain (`com.example.app:/callback`, RFC 8252 section 7.1).
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if parsed.fragment().is_some() {
        return Err("a redirect URI has no fragment");
    }
    if uri.len() > 2000 {
        return Err("too long");
    }
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err("http is only for loopback addresses (127.0.0.1, [::1], localhost)"),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err("use https, loopback http, or a private-use scheme like com.example.app"),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Exact string comparison, except that a loopback `http` URI matches with any port (the port
/// of a native app's listener is chosen at run time).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(registered), Ok(requested)) = (url::Url::parse(registered), url::Url::parse(requested))
    else {
        return false;
    };
    if registered.scheme() != "http" || !is_loopback(&registered) || requested.fragment().is_some()
    {
        return false;
    }
    let mut requested_without_port = requested.clone();
    let mut registered_without_port = registered.clone();
    requested_without_port.set_port(None).is_ok()
        && registered_without_port.set_port(None).is_ok()
        && requested_without_port.as_str() == registered_without_port.as_str()
}

/// What a client says about itself, in a registration request (RFC 7591) or in its metadata
/// document: checked the same way for both.
#[derive(Debug, Clone)]
pub struct ClientMetadata {
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// `none` (a public client, PKCE only), `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub scope: Option<String>,
}

impl ClientMetadata {
    /// Checks `metadata`; `default_method` is the authentication method when it names none.
    pub fn parse(
        metadata: &serde_json::Map<String, Value>,
        default_method: &str,
    ) -> Result<Self, OAuthError> {
        let redirect_uris: Vec<String> = metadata
            .get("redirect_uris")
            .and_then(Value::as_array)
            .ok_or_else(|| OAuthError::invalid_redirect_uri("redirect_uris is required"))?
            .iter()
            .map(|uri| uri.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| OAuthError::invalid_redirect_uri("redirect_uris must be strings"))?;
        if redirect_uris.is_empty() || redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::invalid_redirect_uri(format!(
                "give between 1 and {MAX_REDIRECT_URIS} redirect URIs"
            )));
        }
        for uri in &redirect_uris {
            check_redirect_uri(uri)
                .map_err(|problem| OAuthError::invalid_redirect_uri(format!("{uri}: {problem}")))?;
        }
        let token_endpoint_auth_method = match metadata.get("token_endpoint_auth_method") {
            None => default_method.to_owned(),
            Some(Value::String(method))
                if ["none", "client_secret_basic", "client_secret_post"]
                    .contains(&method.as_str()) =>
            {
                method.clone()
            }
            Some(other) => {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "token_endpoint_auth_method {other} is not supported: use none, client_secret_basic or client_secret_post"
                )));
            }
        };
        let grant_types = strings(metadata.get("grant_types"), "grant_types")?
            .unwrap_or_else(|| vec![AUTHORIZATION_CODE.to_owned(), REFRESH_TOKEN.to_owned()]);
        if !grant_types.iter().any(|grant| grant == AUTHORIZATION_CODE)
            || grant_types
                .iter()
                .any(|grant| grant != AUTHORIZATION_CODE && grant != REFRESH_TOKEN)
        {
            return Err(OAuthError::invalid_client_metadata(
                "grant_types may only be authorization_code and refresh_token",
            ));
        }
        if let Some(response_types) = strings(metadata.get("response_types"), "response_types")?
            && response_types != ["code"]
        {
            return Err(OAuthError::invalid_client_metadata(
                "response_types must be [\"code\"]",
            ));
        }
        let scope = match metadata.get("scope") {
            None => None,
            Some(Value::String(scope))
                if scope
                    .split_whitespace()
                    .all(|scope| scope == "read" || scope == "write") =>
            {
                Some(scope.clone())
            }
            Some(Value::String(_)) => {
                return Err(OAuthError::invalid_client_metadata(
                    "scopes are read and write",
                ));
            }
            Some(_) => {
                return Err(OAuthError::invalid_client_metadata(
                    "scope must be a string",
                ));
            }
        };
        let client_name = match metadata.get("client_name") {
            None => None,
            Some(Value::String(name)) if (1..=200).contains(&name.chars().count()) => {
                Some(name.clone())
            }
            Some(_) => {
                return Err(OAuthError::invalid_client_metadata(
                    "client_name must be a string of 1 to 200 characters",
                ));
            }
        };
        Ok(Self {
            client_name,
            redirect_uris,
            token_endpoint_auth_method,
            grant_types,
            scope,
        })
    }
}

/// `POST /oauth/register`: Dynamic Client Registration (RFC 7591). Public clients
/// (`token_endpoint_auth_method: none`) use PKCE only; others get a secret, shown once. Each
/// address may register [`throttle::ADDRESS_REGISTRATIONS`] clients an hour.
pub async fn register(
    State(state): State<AppState>,
    extensions: Extensions,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let server = state.oauth().ok_or_else(OAuthError::not_configured)?;
    let address = client_address(&extensions);
    if let Err(wait) = server.registrations.check(address) {
        tracing::warn!("client registration throttled");
        return Err(OAuthError::too_many_requests(
            "too many client registrations from this address",
            wait,
        ));
    }
    let metadata: Value = serde_json::from_slice(&body).map_err(|error| {
        OAuthError::invalid_client_metadata(format!("the body is not JSON: {error}"))
    })?;
    let Some(metadata) = metadata.as_object() else {
        return Err(OAuthError::invalid_client_metadata(
            "the body must be a JSON object",
        ));
    };
    let metadata = ClientMetadata::parse(metadata, "client_secret_basic")?;
    let method = metadata.token_endpoint_auth_method.as_str();
    let client_name = metadata
        .client_name
        .clone()
        .unwrap_or_else(|| "Unnamed client".to_owned());

    let (client_id, _) = store::new_secret(CLIENT_ID_PREFIX);
    let client_id = client_id.expose()[..CLIENT_ID_PREFIX.len() + 32].to_owned();
    let secret = (method != "none").then(|| store::new_secret(CLIENT_SECRET_PREFIX));
    let row = RegisteredClientRow {
        client_id: client_id.clone(),
        client_name: client_name.clone(),
        redirect_uris: metadata.redirect_uris.clone(),
        token_endpoint_auth_method: method.to_owned(),
        client_secret_hash: secret.as_ref().map(|(_, digest)| digest.to_vec()),
    };
    let registered_at = store::insert_registered_client(state.db(), &row).await?;
    server.registrations.registered(address);
    tracing::info!(client = %client_id, method, "OAuth client registered");
    let mut answer = json!({
        "client_id": client_id,
        "client_id_issued_at": registered_at.timestamp(),
        "client_name": client_name,
        "redirect_uris": metadata.redirect_uris,
        "grant_types": metadata.grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    if let Some(scope) = &metadata.scope {
        answer["scope"] = json!(scope);
    }
    if let Some((secret, _)) = secret {
        answer["client_secret"] = json!(secret.expose());
        answer["client_secret_expires_at"] = json!(0);
    }
    let mut response = (StatusCode::CREATED, Json(answer)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

fn strings(value: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(value) = value else { return Ok(None) };
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .map(Some)
        .ok_or_else(|| {
            OAuthError::invalid_client_metadata(format!("{field} must be an array of strings"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly_or_on_loopback_with_any_port() {
        let check = |registered: &str, requested: &str, expected: bool| {
            assert_eq!(
                redirect_uri_matches(registered, requested),
                expected,
                "{registered} vs {requested}"
            );
        };
        check("https://app.example/cb", "https://app.example/cb", true);
        check("https://app.example/cb", "https://app.example/cb/", false);
        check(
            "https://app.example/cb",
            "https://app.example/cb?x=1",
            false,
        );
        check(
            "https://app.example/cb",
            "https://app.example:8443/cb",
            false,
        );
        check("https://app.example/cb", "https://evil.example/cb", false);
        check(
            "https://app.example/cb",
            "https://app.example.evil.example/cb",
            false,
        );
        check("http://127.0.0.1/cb", "http://127.0.0.1:51000/cb", true);
        check(
            "http://127.0.0.1:3000/cb",
            "http://127.0.0.1:51000/cb",
            true,
        );
        check("http://[::1]/cb", "http://[::1]:51000/cb", true);
        check("http://127.0.0.1/cb", "http://127.0.0.1:51000/other", false);
        check("http://127.0.0.1/cb", "http://localhost:51000/cb", false);
        check("http://127.0.0.1/cb", "http://127.0.0.1:51000/cb#x", false);
    }

    #[test]
    fn only_safe_redirect_uris_can_be_registered() {
        let check = |uri: &str, ok: bool| assert_eq!(check_redirect_uri(uri).is_ok(), ok, "{uri}");
        check("https://app.example/cb", true);
        check("http://127.0.0.1:8000/cb", true);
        check("http://localhost/cb", true);
        check("com.example.app:/cb", true);
        check("http://app.example/cb", false);
        check("https://app.example/cb#fragment", false);
        check("javascript:alert(1)", false);
        check("data:text/html,hi", false);
        check("/relative", false);
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let value = format!("Basic {}", STANDARD.encode("my%20client:s%3Acret"));
        assert_eq!(
            basic_credentials(value.as_bytes()),
            Some(("my client".to_owned(), "s:cret".to_owned()))
        );
        assert_eq!(basic_credentials(b"Bearer abc"), None);
    }
}
