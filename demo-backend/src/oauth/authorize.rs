//! The browser side: `GET /oauth/authorize` validates the request and shows the sign-in page,
//! `POST /oauth/sign-in` checks the password, `POST /oauth/consent` records what the user allowed
//! and sends the browser back to the client with a code, its `state` and the issuer (RFC 9207).
//!
//! Until the client and its redirect URI are known good, nothing is ever redirected (an error page
//! is shown instead), so the server cannot be used as an open redirector. Each request is bound to
//! the browser that started it by a cookie (its digest is stored), and each form carries a
//! one-time anti-CSRF token (its digest too); sign-in and consent refuse a form without both.

use askama::Template;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use super::OAuthServer;
use super::clients::{self, Client};
use super::config::AUTHORIZATION_CODE;
use super::params::{
    FormParams, Params, QueryParams, client_address, constant_time_equal, is_pkce_value,
};
use super::store::{self, AuthorizationRequest, NewAuthorizationRequest, NewCode, ceiling_for};
use crate::domain::kinds::Scope;
use crate::domain::{passwords, tokens};
use crate::http::AppState;

/// The cookie binding an authorization request to its browser: `dmo_oauth_<request id>`.
const COOKIE_PREFIX: &str = "dmo_oauth_";

#[derive(Template)]
#[template(path = "oauth/sign_in.html")]
struct SignInPage<'a> {
    client_name: &'a str,
    scopes: Vec<&'static str>,
    resource: &'a str,
    redirect_host: String,
    request_id: Uuid,
    csrf: &'a str,
    organization: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "oauth/consent.html")]
struct ConsentPage<'a> {
    client_name: &'a str,
    client_id: &'a str,
    pre_registered: bool,
    user_name: &'a str,
    user_email: &'a str,
    organization_name: &'a str,
    resource: &'a str,
    redirect_host: String,
    scopes: Vec<ScopeChoice>,
    request_id: Uuid,
    csrf: &'a str,
}

struct ScopeChoice {
    name: &'static str,
    description: &'static str,
    allowed: bool,
}

#[derive(Template)]
#[template(path = "oauth/error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Response {
    let Some(server) = state.oauth() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "This server does not sign anyone in.",
        );
    };
    // Until the client and redirect URI are verified, errors are shown, never redirected.
    let client = match params.single("client_id") {
        Ok(Some(client_id)) => match clients::find(server, &state, client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "The application is not registered here (unknown client_id).",
                );
            }
            Err(error) => return error_page(error.status, &error.description),
        },
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The request names no application (client_id is missing).",
            );
        }
        Err(error) => return error_page(StatusCode::BAD_REQUEST, &error.description),
    };
    let redirect_uri = match params.single("redirect_uri") {
        Ok(Some(uri)) if client.allows_redirect(uri) => uri.to_owned(),
        Ok(Some(_)) => {
            tracing::warn!(client = %client.client_id, "refused an authorization request with an unregistered redirect URI");
            return error_page(
                StatusCode::BAD_REQUEST,
                "The redirect URI is not one the application registered.",
            );
        }
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, "The request has no redirect_uri."),
        Err(error) => return error_page(StatusCode::BAD_REQUEST, &error.description),
    };
    match validate(server, &client, &params) {
        Ok(validated) => start(&state, server, &client, &redirect_uri, validated).await,
        Err((code, description)) => {
            let state_value = params.single("state").ok().flatten();
            redirect_error(server, &redirect_uri, state_value, code, &description)
        }
    }
}

/// What a valid authorization request asks for.
struct Validated {
    state: String,
    code_challenge: String,
    resource: String,
    scopes: Vec<Scope>,
}

/// Checks everything but the client and its redirect URI; errors are RFC 6749 section 4.1.2.1
/// codes, sent back to the client.
fn validate(
    server: &OAuthServer,
    client: &Client,
    params: &Params,
) -> Result<Validated, (&'static str, String)> {
    let invalid = |error: super::error::OAuthError| ("invalid_request", error.description);
    match params.single("response_type").map_err(invalid)? {
        Some("code") => {}
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
        None => return Err(("invalid_request", "response_type is missing".into())),
    }
    if !client.allows_grant(AUTHORIZATION_CODE) {
        return Err((
            "unauthorized_client",
            "this client may not use the authorization code flow".into(),
        ));
    }
    let state = params
        .single("state")
        .map_err(invalid)?
        .ok_or(("invalid_request", "state is required".to_owned()))?;
    if state.len() > 500 {
        return Err(("invalid_request", "state is too long".into()));
    }
    let code_challenge = params.single("code_challenge").map_err(invalid)?.ok_or((
        "invalid_request",
        "PKCE is required: send code_challenge with code_challenge_method=S256".to_owned(),
    ))?;
    if params.single("code_challenge_method").map_err(invalid)? != Some("S256") {
        return Err((
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    if !is_pkce_value(code_challenge) {
        return Err(("invalid_request", "code_challenge is malformed".into()));
    }
    let resources = params.all("resource");
    let resource = match resources.as_slice() {
        [] => server.settings.api_resource(),
        [one] if server.settings.resources().iter().any(|known| known == one) => (*one).to_owned(),
        [_] => {
            return Err((
                "invalid_target",
                "this server issues no tokens for that resource".into(),
            ));
        }
        _ => return Err(("invalid_target", "ask for one resource at a time".into())),
    };
    let scopes = parse_scope(params.single("scope").map_err(invalid)?)
        .map_err(|description| ("invalid_scope", description))?;
    Ok(Validated {
        state: state.to_owned(),
        code_challenge: code_challenge.to_owned(),
        resource,
        scopes,
    })
}

/// `read`, `write` or both, space-separated; absent means `read`.
pub fn parse_scope(scope: Option<&str>) -> Result<Vec<Scope>, String> {
    let Some(scope) = scope else {
        return Ok(vec![Scope::Read]);
    };
    let mut scopes = Vec::new();
    for name in scope.split_whitespace() {
        match name {
            "read" => scopes.push(Scope::Read),
            "write" => scopes.push(Scope::Write),
            other => {
                return Err(format!(
                    "unknown scope `{other}`: the scopes are read and write"
                ));
            }
        }
    }
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        scopes.push(Scope::Read);
    }
    Ok(scopes)
}

async fn start(
    state: &AppState,
    server: &OAuthServer,
    client: &Client,
    redirect_uri: &str,
    validated: Validated,
) -> Response {
    let (browser_secret, browser_digest) = store::new_secret("");
    let (csrf, csrf_digest) = store::new_secret("");
    let lifetime = server.settings.authorization_request_lifetime;
    let inserted = store::insert_request(
        state.db(),
        &NewAuthorizationRequest {
            client_id: &client.client_id,
            redirect_uri,
            state: &validated.state,
            code_challenge: &validated.code_challenge,
            resource: &validated.resource,
            scopes: &validated.scopes,
            browser_binding_hash: browser_digest,
            csrf_token_hash: csrf_digest,
            expires_at: Utc::now() + lifetime,
        },
    )
    .await;
    let request_id = match inserted {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "cannot store an authorization request");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing in is unavailable right now.",
            );
        }
    };
    let page = SignInPage {
        client_name: &client.client_name,
        scopes: store::scope_names(&validated.scopes),
        resource: &validated.resource,
        redirect_host: host_of(redirect_uri),
        request_id,
        csrf: csrf.expose(),
        organization: "",
        email: "",
        error: None,
    };
    let mut response = html(StatusCode::OK, page.render());
    let cookie = format!(
        "{COOKIE_PREFIX}{}={}; Path=/oauth; Max-Age={}; HttpOnly; SameSite=Strict{}",
        request_id.simple(),
        browser_secret.expose(),
        lifetime.as_secs(),
        if server.settings.issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /oauth/sign-in`.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    FormParams(params): FormParams,
) -> Response {
    let Some(server) = state.oauth() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "This server does not sign anyone in.",
        );
    };
    let request = match bound_request(&state, &headers, &params).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Ok(Some(client)) = clients::find(server, &state, &request.client_id).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The application is no longer registered.",
        );
    };
    let organization = params
        .single("organization")
        .ok()
        .flatten()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let email = params
        .single("email")
        .ok()
        .flatten()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let password = params
        .single("password")
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_owned();
    let account = format!("{organization}/{email}");
    let address = client_address(&extensions);

    // A new anti-CSRF token for whichever page comes next.
    let (csrf, csrf_digest) = store::new_secret("");
    let again = |status: StatusCode, error: &str| {
        let page = SignInPage {
            client_name: &client.client_name,
            scopes: request
                .scopes
                .iter()
                .filter_map(|scope| scope.parse::<Scope>().ok())
                .map(Scope::as_str)
                .collect(),
            resource: &request.resource,
            redirect_host: host_of(&request.redirect_uri),
            request_id: request.id,
            csrf: csrf.expose(),
            organization: &organization,
            email: &email,
            error: Some(error),
        };
        html(status, page.render())
    };
    if let Err(wait) = server.throttle.check(&account, address) {
        tracing::warn!("sign-in throttled");
        let _ = store::record_csrf(state.db(), request.id, csrf_digest).await;
        let minutes = wait.as_secs().div_ceil(60);
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins. Try again in {minutes} minute(s)."),
        );
    }
    let user = match passwords::verify(state.db(), &organization, &email, &password).await {
        Ok(user) => user,
        Err(error) => {
            tracing::error!(%error, "cannot check a password");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing in is unavailable right now.",
            );
        }
    };
    let Some(user) = user else {
        server.throttle.failed(&account, address);
        tracing::info!("a sign-in failed");
        if let Err(error) = store::record_csrf(state.db(), request.id, csrf_digest).await {
            tracing::error!(%error, "cannot renew an anti-CSRF token");
        }
        return again(
            StatusCode::UNAUTHORIZED,
            "The organisation, e-mail or password is wrong.",
        );
    };
    server.throttle.succeeded(&account);
    if let Err(error) = store::record_sign_in(
        state.db(),
        request.id,
        user.organization_id,
        user.user_id,
        csrf_digest,
    )
    .await
    {
        tracing::error!(%error, "cannot record a sign-in");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is unavailable right now.",
        );
    }
    let ceiling = ceiling_for(user.role);
    let scopes = request
        .scopes
        .iter()
        .filter_map(|scope| scope.parse::<Scope>().ok())
        .map(|scope| ScopeChoice {
            name: scope.as_str(),
            description: describe(scope),
            allowed: scope <= ceiling,
        })
        .collect();
    let page = ConsentPage {
        client_name: &client.client_name,
        client_id: &client.client_id,
        pre_registered: client.pre_registered,
        user_name: &user.name,
        user_email: &user.email,
        organization_name: &user.organization_name,
        resource: &request.resource,
        redirect_host: host_of(&request.redirect_uri),
        scopes,
        request_id: request.id,
        csrf: csrf.expose(),
    };
    html(StatusCode::OK, page.render())
}

/// `POST /oauth/consent`.
pub async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    FormParams(params): FormParams,
) -> Response {
    let Some(server) = state.oauth() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "This server does not sign anyone in.",
        );
    };
    let request = match bound_request(&state, &headers, &params).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let (Some(organization_id), Some(user_id)) = (request.organization_id, request.user_id) else {
        return error_page(StatusCode::FORBIDDEN, "Sign in first.");
    };
    match store::complete_request(state.db(), request.id).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This request was already answered or has expired.",
            );
        }
        Err(error) => {
            tracing::error!(%error, "cannot complete an authorization request");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing in is unavailable right now.",
            );
        }
    }
    if params.single("decision").ok().flatten() != Some("allow") {
        return redirect_error(
            server,
            &request.redirect_uri,
            Some(&request.state),
            "access_denied",
            "the user denied access",
        );
    }
    let role = match store::role_of(state.db(), organization_id, user_id).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            return redirect_error(
                server,
                &request.redirect_uri,
                Some(&request.state),
                "access_denied",
                "the user no longer exists",
            );
        }
        Err(error) => {
            tracing::error!(%error, "cannot read a user's role");
            return redirect_error(
                server,
                &request.redirect_uri,
                Some(&request.state),
                "server_error",
                "internal error",
            );
        }
    };
    let chosen = params.all("scope");
    let granted: Vec<Scope> = request
        .scopes
        .iter()
        .filter_map(|scope| scope.parse::<Scope>().ok())
        .filter(|scope| chosen.contains(&scope.as_str()) && *scope <= ceiling_for(role))
        .collect();
    if granted.is_empty() {
        return redirect_error(
            server,
            &request.redirect_uri,
            Some(&request.state),
            "access_denied",
            "no permission was granted",
        );
    }
    let code = store::insert_code(
        state.db(),
        &NewCode {
            request: &request,
            organization_id,
            user_id,
            scopes: &granted,
            expires_at: Utc::now() + server.settings.authorization_code_lifetime,
        },
    )
    .await;
    match code {
        Ok(code) => {
            tracing::info!(client = %request.client_id, scopes = ?store::scope_names(&granted), "authorization code issued");
            redirect(
                &request.redirect_uri,
                &[
                    ("code", code.expose()),
                    ("state", &request.state),
                    ("iss", &server.settings.issuer),
                ],
            )
        }
        Err(error) => {
            tracing::error!(%error, "cannot store an authorization code");
            redirect_error(
                server,
                &request.redirect_uri,
                Some(&request.state),
                "server_error",
                "internal error",
            )
        }
    }
}

/// The open request a form answers, if the form comes from the browser that started it and
/// carries the page's current anti-CSRF token.
async fn bound_request(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<AuthorizationRequest, Response> {
    let Some(id) = params
        .single("request")
        .ok()
        .flatten()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "The form is incomplete.",
        ));
    };
    let request = match store::open_request(state.db(), id).await {
        Ok(Some(request)) => request,
        Ok(None) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was already answered.",
            ));
        }
        Err(error) => {
            tracing::error!(%error, "cannot read an authorization request");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing in is unavailable right now.",
            ));
        }
    };
    let browser = cookie(headers, &format!("{COOKIE_PREFIX}{}", id.simple()));
    let csrf = params.single("csrf").ok().flatten();
    let bound = browser.is_some_and(|secret| {
        constant_time_equal(&tokens::hash(&secret), &request.browser_binding_hash)
    }) && csrf
        .is_some_and(|csrf| constant_time_equal(&tokens::hash(csrf), &request.csrf_token_hash));
    if !bound {
        tracing::warn!("refused a sign-in form without its browser binding or anti-CSRF token");
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This form did not come from the sign-in page of this browser.",
        ));
    }
    Ok(request)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn describe(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => {
            "see your organisation's services, metrics, alerts, incidents and deployments"
        }
        Scope::Write => "open, acknowledge, resolve and annotate incidents",
        Scope::Admin => "manage the organisation",
    }
}

/// `scheme://host[:port]` of a URI, to show the user where they will be sent.
fn host_of(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(_) => url.origin().ascii_serialization(),
            None => format!("{}:", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "The redirect URI is invalid.");
    };
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            query.append_pair(key, value);
        }
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error sent back to a verified redirect URI (RFC 6749 section 4.1.2.1), with the issuer.
fn redirect_error(
    server: &OAuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    code: &str,
    description: &str,
) -> Response {
    let mut pairs = vec![("error", code), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", &server.settings.issuer));
    redirect(redirect_uri, &pairs)
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(status, ErrorPage { message }.render())
}

/// An HTML page that must not be cached, framed or run scripts.
fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    let body = match rendered {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "cannot render a page");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
