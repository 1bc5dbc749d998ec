//! Bearer-token authentication and per-token rate limiting for the API's handlers.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::domain::Tenant;
use crate::domain::kinds::Scope;
use crate::domain::tokens::{self, Principal};
use crate::http::AppState;
use crate::http::problem::ApiError;

/// The caller, authenticated by `Authorization: Bearer <token>` and within its rate limit.
/// Handlers then ask for the scope they need with [`Caller::require`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    state: AppState,
}

impl Caller {
    /// The caller's organisation's data, if the token grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<Tenant, ApiError> {
        if !self.principal.has_scope(scope) {
            return Err(ApiError::MissingScope(scope));
        }
        Ok(Tenant::new(
            self.state.db.clone(),
            self.principal.organization_id,
            self.principal.user_id,
        ))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "send an API token as `Authorization: Bearer <token>`",
            ))?;
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        let presented = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let principal = if presented.starts_with(crate::oauth::ACCESS_TOKEN_PREFIX) {
            oauth_principal(state, presented).await?
        } else {
            tokens::authenticate(&state.db, presented).await?
        }
        .ok_or(ApiError::Unauthorized(
            "the token is unknown, revoked or expired",
        ))?;
        if let Err(wait) = state.rate_limiter.check(principal.token_id) {
            return Err(ApiError::RateLimited {
                retry_after_seconds: wait.as_secs() + 1,
            });
        }
        Ok(Caller {
            principal,
            state: state.clone(),
        })
    }
}

/// The caller of an OAuth access token, which the API accepts only when it was issued for the API
/// (its resource, RFC 8707): a token issued for external-mcp, or any other resource, is refused.
async fn oauth_principal(state: &AppState, presented: &str) -> Result<Option<Principal>, ApiError> {
    let Some(server) = state.oauth() else {
        return Ok(None);
    };
    let Some(token) = crate::oauth::store::active_access_token(&state.db, presented).await? else {
        return Ok(None);
    };
    if token.resource != server.settings.api_resource() {
        tracing::warn!(resource = %token.resource, "refused an OAuth token issued for another resource");
        return Err(ApiError::Unauthorized(
            "this OAuth token was issued for another resource, not for this API",
        ));
    }
    Ok(Some(token.principal()))
}

/// The caller's organisation, for handlers that only read: needs the `read` scope.
#[derive(Debug, Clone)]
pub struct Reader(pub Tenant);

/// The caller's organisation, for handlers that change data: needs the `write` scope, checked
/// before the body is read, so a read-only token meets 403 whatever it sends.
#[derive(Debug, Clone)]
pub struct Writer(pub Tenant);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self(caller.require(Scope::Read)?))
    }
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self(caller.require(Scope::Write)?))
    }
}
