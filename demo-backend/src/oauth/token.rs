//! `POST /oauth/token` (authorization code with PKCE, refresh with rotation and reuse detection,
//! RFC 8693 token exchange), `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect`
//! (RFC 7662, for resource servers only).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::OAuthServer;
use super::authorize::parse_scope;
use super::clients::{self, Client};
use super::config::{AUTHORIZATION_CODE, REFRESH_TOKEN, TOKEN_EXCHANGE};
use super::error::OAuthError;
use super::params::{FormParams, Params, verifier_matches};
use super::store::{self, ACCESS_TOKEN_PREFIX, NewAccessToken, REFRESH_TOKEN_PREFIX, ceiling_for};
use crate::domain::Secret;
use crate::domain::kinds::Scope;
use crate::http::AppState;

/// RFC 8693's name for an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What the token endpoint hands out.
struct Issued {
    access_token: Secret,
    expires_at: DateTime<Utc>,
    refresh_token: Option<Secret>,
    scopes: Vec<Scope>,
    issued_token_type: bool,
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        let mut body = json!({
            "access_token": self.access_token.expose(),
            "token_type": "Bearer",
            "expires_in": (self.expires_at - Utc::now()).num_seconds().max(1),
            "scope": store::scope_names(&self.scopes).join(" "),
        });
        if let Some(refresh_token) = &self.refresh_token {
            body["refresh_token"] = json!(refresh_token.expose());
        }
        if self.issued_token_type {
            body["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
        }
        no_store(Json(body).into_response())
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    FormParams(params): FormParams,
) -> Result<Response, OAuthError> {
    let server = state.oauth().ok_or_else(OAuthError::not_configured)?;
    let grant_type = params.required("grant_type")?.to_owned();
    let client = clients::authenticate(server, &state, &headers, &params).await?;
    if ![AUTHORIZATION_CODE, REFRESH_TOKEN, TOKEN_EXCHANGE].contains(&grant_type.as_str()) {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant_type `{grant_type}` is not supported"
        )));
    }
    if !client.allows_grant(&grant_type) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use `{grant_type}`"
        )));
    }
    let issued = match grant_type.as_str() {
        AUTHORIZATION_CODE => authorization_code(server, &state, &client, &params).await?,
        REFRESH_TOKEN => refresh(server, &state, &client, &params).await?,
        _ => exchange(server, &state, &client, &params).await?,
    };
    Ok(issued.into_response())
}

async fn authorization_code(
    server: &OAuthServer,
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Issued, OAuthError> {
    let code = params.required("code")?;
    let redirect_uri = params.required("redirect_uri")?;
    let verifier = params
        .single("code_verifier")?
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    let resource = single_resource(params)?;

    let mut transaction = state.db().begin().await?;
    let Some(row) = store::lock_code(&mut transaction, code).await? else {
        return Err(OAuthError::invalid_grant(
            "the authorization code is unknown",
        ));
    };
    if row.redeemed {
        // A replayed code: whoever holds it may be an attacker, so what the first use issued goes.
        if let Some(grant_id) = row.grant_id {
            store::revoke_grant(&mut transaction, grant_id, "authorization code replayed").await?;
        }
        transaction.commit().await?;
        tracing::warn!(client = %client.client_id, "an authorization code was presented twice; its tokens are revoked");
        return Err(OAuthError::invalid_grant(
            "the authorization code was already used; the tokens issued for it are revoked",
        ));
    }
    if row.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if !row.live {
        return Err(OAuthError::invalid_grant(
            "the authorization code has expired",
        ));
    }
    if row.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    if !verifier_matches(verifier, &row.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if resource.is_some_and(|resource| resource != row.resource) {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorization request's",
        ));
    }
    let ceiling = ceiling_for(row.role);
    let scopes: Vec<Scope> = parse_scopes(&row.scopes)
        .into_iter()
        .filter(|&scope| scope <= ceiling)
        .collect();
    if scopes.is_empty() {
        return Err(OAuthError::invalid_grant(
            "the user's role no longer allows what was granted",
        ));
    }
    let grant_id = store::create_grant(
        &mut transaction,
        &client.client_id,
        row.organization_id,
        row.user_id,
        &row.resource,
        &scopes,
    )
    .await?;
    store::mark_code_redeemed(&mut transaction, code, grant_id).await?;
    let expires_at = Utc::now() + server.settings.access_token_lifetime;
    let access_token = store::issue_access_token(
        &mut transaction,
        &NewAccessToken {
            grant_id,
            exchanged_from: None,
            client_id: &client.client_id,
            organization_id: row.organization_id,
            user_id: row.user_id,
            resource: &row.resource,
            scopes: &scopes,
            expires_at,
        },
    )
    .await?;
    let refresh_token = if client.allows_grant(REFRESH_TOKEN) {
        Some(
            store::issue_refresh_token(
                &mut transaction,
                grant_id,
                Utc::now() + server.settings.refresh_token_lifetime,
            )
            .await?,
        )
    } else {
        None
    };
    transaction.commit().await?;
    tracing::info!(client = %client.client_id, grant = %grant_id, "OAuth tokens issued for an authorization code");
    Ok(Issued {
        access_token,
        expires_at,
        refresh_token,
        scopes,
        issued_token_type: false,
    })
}

async fn refresh(
    server: &OAuthServer,
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Issued, OAuthError> {
    let presented = params.required("refresh_token")?;
    let resource = single_resource(params)?;
    let mut transaction = state.db().begin().await?;
    let Some(row) = store::lock_refresh_token(&mut transaction, presented).await? else {
        return Err(OAuthError::invalid_grant("the refresh token is unknown"));
    };
    if row.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if row.grant_revoked {
        return Err(OAuthError::invalid_grant("the refresh token is revoked"));
    }
    if row.used {
        // Reuse: one of the two holders is not the client; end the whole family.
        store::revoke_grant(&mut transaction, row.grant_id, "refresh token reused").await?;
        transaction.commit().await?;
        tracing::warn!(client = %client.client_id, grant = %row.grant_id, "a refresh token was reused; its family is revoked");
        return Err(OAuthError::invalid_grant(
            "the refresh token was already used; every token of this grant is now revoked",
        ));
    }
    if !row.live {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    if resource.is_some_and(|resource| resource != row.resource) {
        return Err(OAuthError::invalid_target(
            "resource differs from the grant's",
        ));
    }
    let granted = parse_scopes(&row.scopes);
    let requested = narrowed_scopes(params, granted, "a refresh cannot add scopes to the grant")?;
    let ceiling = ceiling_for(row.role);
    let scopes: Vec<Scope> = requested
        .into_iter()
        .filter(|&scope| scope <= ceiling)
        .collect();
    if scopes.is_empty() {
        return Err(OAuthError::invalid_grant(
            "the user's role no longer allows what was granted",
        ));
    }
    store::mark_refresh_token_used(&mut transaction, row.id).await?;
    let expires_at = Utc::now() + server.settings.access_token_lifetime;
    let access_token = store::issue_access_token(
        &mut transaction,
        &NewAccessToken {
            grant_id: row.grant_id,
            exchanged_from: None,
            client_id: &client.client_id,
            organization_id: row.organization_id,
            user_id: row.user_id,
            resource: &row.resource,
            scopes: &scopes,
            expires_at,
        },
    )
    .await?;
    let refresh_token = store::issue_refresh_token(
        &mut transaction,
        row.grant_id,
        Utc::now() + server.settings.refresh_token_lifetime,
    )
    .await?;
    transaction.commit().await?;
    Ok(Issued {
        access_token,
        expires_at,
        refresh_token: Some(refresh_token),
        scopes,
        issued_token_type: false,
    })
}

/// RFC 8693: a resource server trades an access token it received (issued for a resource it
/// serves) for a short-lived token of the same user for the REST API, so it never has to pass
/// on the token it received.
async fn exchange(
    server: &OAuthServer,
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Issued, OAuthError> {
    let subject_token = params.required("subject_token")?;
    if params.required("subject_token_type")? != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if params
        .single("requested_token_type")?
        .is_some_and(|kind| kind != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if params.single("actor_token")?.is_some() {
        return Err(OAuthError::invalid_request(
            "actor tokens are not supported",
        ));
    }
    let api = server.settings.api_resource();
    let target = match (single_resource(params)?, params.single("audience")?) {
        (Some(resource), _) => resource,
        (None, Some(audience)) => audience,
        (None, None) => api.as_str(),
    };
    if target != api {
        return Err(OAuthError::invalid_target(format!(
            "tokens are exchanged only for the API ({api})"
        )));
    }
    let Some(subject) = store::active_access_token(state.db(), subject_token).await? else {
        return Err(OAuthError::invalid_request(
            "the subject token is not active",
        ));
    };
    if !client.resources_served.contains(&subject.resource) {
        tracing::warn!(client = %client.client_id, "refused to exchange a token issued for another resource");
        return Err(OAuthError::invalid_request(
            "the subject token was not issued for a resource this client serves",
        ));
    }
    let held = subject.scopes();
    let scopes = narrowed_scopes(
        params,
        held,
        "an exchanged token cannot hold more than the subject token",
    )?;
    if scopes.is_empty() {
        return Err(OAuthError::invalid_request(
            "the subject token holds no scope",
        ));
    }
    let expires_at =
        (Utc::now() + server.settings.exchanged_token_lifetime).min(subject.expires_at);
    let mut connection = state.db().acquire().await?;
    let access_token = store::issue_access_token(
        &mut connection,
        &NewAccessToken {
            grant_id: subject.grant_id,
            exchanged_from: Some(subject.id),
            client_id: &client.client_id,
            organization_id: subject.organization_id,
            user_id: subject.user_id,
            resource: &api,
            scopes: &scopes,
            expires_at,
        },
    )
    .await?;
    Ok(Issued {
        access_token,
        expires_at,
        refresh_token: None,
        scopes,
        issued_token_type: true,
    })
}

/// `POST /oauth/revoke` (RFC 7009): always 200 for an authenticated client, whether or not the
/// token was known, so it reveals nothing. Revoking a refresh token revokes its whole grant.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    FormParams(params): FormParams,
) -> Result<Response, OAuthError> {
    let server = state.oauth().ok_or_else(OAuthError::not_configured)?;
    let client = clients::authenticate(server, &state, &headers, &params).await?;
    let token = params.required("token")?;
    if token.starts_with(ACCESS_TOKEN_PREFIX) {
        store::revoke_access_token(state.db(), token, &client.client_id).await?;
    } else if token.starts_with(REFRESH_TOKEN_PREFIX) {
        store::revoke_refresh_token(state.db(), token, &client.client_id).await?;
    }
    Ok(no_store(().into_response()))
}

/// `POST /oauth/introspect` (RFC 7662), for confidential clients that serve a resource: a token
/// is reported active only to a client serving the resource it was issued for.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    FormParams(params): FormParams,
) -> Result<Response, OAuthError> {
    let server = state.oauth().ok_or_else(OAuthError::not_configured)?;
    let client = clients::authenticate(server, &state, &headers, &params).await?;
    if client.secret_hash.is_none() || client.resources_served.is_empty() {
        return Err(OAuthError::unauthorized_client(
            "only resource servers may introspect tokens",
        ));
    }
    let token = params.required("token")?;
    let active = store::active_access_token(state.db(), token)
        .await?
        .filter(|token| client.resources_served.contains(&token.resource));
    let Some(token) = active else {
        return Ok(no_store(Json(json!({ "active": false })).into_response()));
    };
    let scopes = token.scopes();
    Ok(no_store(
        Json(json!({
            "active": !scopes.is_empty(),
            "scope": store::scope_names(&scopes).join(" "),
            "client_id": token.client_id,
            "username": token.user_email,
            "sub": token.user_id,
            "aud": token.resource,
            "iss": server.settings.issuer,
            "exp": token.expires_at.timestamp(),
            "iat": token.issued_at.timestamp(),
            "token_type": "Bearer",
            "organization": token.organization_slug,
        }))
        .into_response(),
    ))
}

fn single_resource(params: &Params) -> Result<Option<&str>, OAuthError> {
    let resources = params.all("resource");
    match resources.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(OAuthError::invalid_target("ask for one resource at a time")),
    }
}

/// The `scope` a request asks for, which may only narrow `held`; `held` when it names none.
fn narrowed_scopes(
    params: &Params,
    held: Vec<Scope>,
    widening: &'static str,
) -> Result<Vec<Scope>, OAuthError> {
    let Some(scope) = params.single("scope")? else {
        return Ok(held);
    };
    let requested = parse_scope(Some(scope)).map_err(OAuthError::invalid_scope)?;
    if requested.iter().any(|scope| !held.contains(scope)) {
        return Err(OAuthError::invalid_scope(widening));
    }
    Ok(requested)
}

fn parse_scopes(names: &[String]) -> Vec<Scope> {
    names.iter().filter_map(|name| name.parse().ok()).collect()
}
