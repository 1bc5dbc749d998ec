//! `GET /api/v1/me`: who the token belongs to and what it may do.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::kinds::{Role, Scope};
use crate::http::auth::Caller;
use crate::http::extract::Json;
use crate::http::problem::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: MeUser,
    pub organization: MeOrganization,
    pub token: MeToken,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeUser {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeOrganization {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeToken {
    pub id: Uuid,
    /// What the token may do, already narrowed to the user's role.
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who the token belongs to, its organisation and its scopes.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    responses((status = 200, body = Me)))]
pub async fn me(caller: Caller) -> Result<Json<Me>, ApiError> {
    caller.require(Scope::Read)?;
    let principal = caller.principal;
    Ok(Json(Me {
        user: MeUser {
            id: principal.user_id,
            name: principal.user_name,
            email: principal.user_email,
            role: principal.role,
        },
        organization: MeOrganization {
            id: principal.organization_id,
            slug: principal.organization_slug,
            name: principal.organization_name,
        },
        token: MeToken {
            id: principal.token_id,
            scopes: principal.scopes,
            expires_at: principal.expires_at,
        },
    }))
}
