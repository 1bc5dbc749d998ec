//! Alerts raised by monitors.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::alerts::{Alert, AlertFilter};
use crate::domain::kinds::{AlertState, Severity};
use crate::domain::page::PageRequest;
use crate::http::auth::Reader;
use crate::http::extract::{Json, Path, Query};
use crate::http::problem::ApiError;
use crate::http::routes::PageBody;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    state: Option<AlertState>,
    severity: Option<Severity>,
    service_id: Option<Uuid>,
    /// Alerts that started at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Alerts that started before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertListParams),
    responses((status = 200, body = PageBody<Alert>)))]
pub async fn list_alerts(
    Reader(tenant): Reader,
    Query(params): Query<AlertListParams>,
) -> Result<Json<PageBody<Alert>>, ApiError> {
    let page = PageRequest::new(params.limit, params.cursor.as_deref())?;
    let filter = AlertFilter {
        state: params.state,
        severity: params.severity,
        service_id: params.service_id,
        since: params.since,
        until: params.until,
    };
    Ok(Json(tenant.list_alerts(&filter, &page).await?.into()))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{alert_id}", tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = Alert)))]
pub async fn get_alert(
    Reader(tenant): Reader,
    Path(alert_id): Path<Uuid>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(tenant.alert(alert_id).await?))
}
