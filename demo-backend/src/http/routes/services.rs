//! The service catalog.

use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::kinds::Tier;
use crate::domain::monitors::Monitor;
use crate::domain::page::PageRequest;
use crate::domain::services::{Service, ServiceFilter};
use crate::http::auth::Reader;
use crate::http::extract::{Json, Path, Query};
use crate::http::problem::ApiError;
use crate::http::routes::PageBody;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServiceListParams {
    /// Only services of this team.
    #[param(pattern = r"^[^\u0000]*$")]
    team: Option<String>,
    /// Only services of this tier.
    tier: Option<Tier>,
    /// Only services carrying this tag.
    #[param(pattern = r"^[^\u0000]*$")]
    tag: Option<String>,
    /// Only services whose name contains this text (case-insensitive).
    #[param(pattern = r"^[^\u0000]*$")]
    q: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Services of the organisation with their current health, ordered by name.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(ServiceListParams),
    responses((status = 200, body = PageBody<Service>)))]
pub async fn list_services(
    Reader(tenant): Reader,
    Query(params): Query<ServiceListParams>,
) -> Result<Json<PageBody<Service>>, ApiError> {
    let page = PageRequest::new(params.limit, params.cursor.as_deref())?;
    let filter = ServiceFilter {
        team: params.team,
        tier: params.tier,
        tag: params.tag,
        name_contains: params.q,
    };
    Ok(Json(tenant.list_services(&filter, &page).await?.into()))
}

/// One service with its current health.
#[utoipa::path(get, path = "/api/v1/services/{service_id}", tag = "services",
    params(("service_id" = Uuid, Path)),
    responses((status = 200, body = Service)))]
pub async fn get_service(
    Reader(tenant): Reader,
    Path(service_id): Path<Uuid>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(tenant.service(service_id).await?))
}

/// The monitors (alert rules) of a service.
#[utoipa::path(get, path = "/api/v1/services/{service_id}/monitors", tag = "services",
    params(("service_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Monitor>)))]
pub async fn list_monitors(
    Reader(tenant): Reader,
    Path(service_id): Path<Uuid>,
) -> Result<Json<Vec<Monitor>>, ApiError> {
    Ok(Json(tenant.monitors(service_id).await?))
}
