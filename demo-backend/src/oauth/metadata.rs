//! RFC 8414 authorization server metadata, at `/.well-known/oauth-authorization-server`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::config::{AUTHORIZATION_CODE, REFRESH_TOKEN, TOKEN_EXCHANGE};
use super::error::OAuthError;
use crate::http::AppState;

pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

pub async fn metadata(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let server = state.oauth().ok_or_else(OAuthError::not_configured)?;
    let issuer = &server.settings.issuer;
    Ok(Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "registration_endpoint": format!("{issuer}/oauth/register"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [AUTHORIZATION_CODE, REFRESH_TOKEN, TOKEN_EXCHANGE],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["read", "write"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "service_documentation": format!("{issuer}/api/v1/openapi.json"),
    }))
    .into_response())
}
