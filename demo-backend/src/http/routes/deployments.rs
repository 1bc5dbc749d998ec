//! Deployments of services.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::deployments::{Deployment, DeploymentFilter};
use crate::domain::kinds::DeploymentStatus;
use crate::domain::page::PageRequest;
use crate::http::auth::Reader;
use crate::http::extract::{Json, Query};
use crate::http::problem::ApiError;
use crate::http::routes::PageBody;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeploymentListParams {
    service_id: Option<Uuid>,
    status: Option<DeploymentStatus>,
    /// Deployments started at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Deployments started before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Deployments, newest first.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", params(DeploymentListParams),
    responses((status = 200, body = PageBody<Deployment>)))]
pub async fn list_deployments(
    Reader(tenant): Reader,
    Query(params): Query<DeploymentListParams>,
) -> Result<Json<PageBody<Deployment>>, ApiError> {
    let page = PageRequest::new(params.limit, params.cursor.as_deref())?;
    let filter = DeploymentFilter {
        service_id: params.service_id,
        status: params.status,
        since: params.since,
        until: params.until,
    };
    Ok(Json(tenant.list_deployments(&filter, &page).await?.into()))
}
