//! Metric series of a service: list, range queries aggregated in SQL, raw samples.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::metrics::{Aggregation, MetricSeries, Point, RangeQuery, Sample, parse_step};
use crate::domain::page::PageRequest;
use crate::http::auth::Reader;
use crate::http::extract::{Json, Path, Query};
use crate::http::problem::ApiError;
use crate::http::routes::PageBody;

/// The metric series of a service with their latest values.
#[utoipa::path(get, path = "/api/v1/services/{service_id}/metrics", tag = "metrics",
    params(("service_id" = Uuid, Path)),
    responses((status = 200, body = Vec<MetricSeries>)))]
pub async fn list_series(
    Reader(tenant): Reader,
    Path(service_id): Path<Uuid>,
) -> Result<Json<Vec<MetricSeries>>, ApiError> {
    Ok(Json(tenant.metric_series(service_id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Start of the window, RFC 3339 (default: 24 hours before `to`).
    from: Option<DateTime<Utc>>,
    /// End of the window, exclusive, RFC 3339 (default: now).
    to: Option<DateTime<Utc>>,
    /// Width of each point: `60s`, `5m`, `1h`, `1d` (default `1m`): at least 60 seconds, an
    /// amount of at most 1000000; at most 11000 points.
    #[param(
        pattern = r"^0*(?:(?:[6-9][0-9]|[1-9][0-9]{2,5}|1000000)s|(?:[1-9][0-9]{0,5}|1000000)[mhd])$"
    )]
    step: Option<String>,
    /// How samples within a step are combined (default `avg`).
    aggregation: Option<Aggregation>,
}

/// An aggregated time series.
#[derive(Debug, Serialize, ToSchema)]
pub struct RangeResult {
    pub service_id: Uuid,
    pub metric: String,
    pub aggregation: Aggregation,
    pub step_seconds: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// One point per step that has samples, oldest first; `at` is the step's start.
    pub points: Vec<Point>,
}

/// A metric over a time window, aggregated per step in the database.
#[utoipa::path(get, path = "/api/v1/services/{service_id}/metrics/{metric}", tag = "metrics",
    params(("service_id" = Uuid, Path), ("metric" = String, Path, min_length = 1, pattern = r"^[^\u0000]*$", description = "e.g. error_rate"), RangeParams),
    responses((status = 200, body = RangeResult)))]
pub async fn query_range(
    Reader(tenant): Reader,
    Path((service_id, metric)): Path<(Uuid, String)>,
    Query(params): Query<RangeParams>,
) -> Result<Json<RangeResult>, ApiError> {
    let to = params.to.unwrap_or_else(Utc::now);
    let from = params.from.unwrap_or(to - Duration::hours(24));
    let step = params
        .step
        .as_deref()
        .map(parse_step)
        .transpose()?
        .unwrap_or(Duration::minutes(1));
    let query = RangeQuery::new(from, to, step, params.aggregation.unwrap_or_default())?;
    let points = tenant.metric_range(service_id, &metric, query).await?;
    Ok(Json(RangeResult {
        service_id,
        metric,
        aggregation: query.aggregation,
        step_seconds: step.num_seconds(),
        from,
        to,
        points,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SampleParams {
    /// Start of the window, RFC 3339 (default: 1 hour before `to`).
    from: Option<DateTime<Utc>>,
    /// End of the window, exclusive, RFC 3339 (default: now).
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Raw per-minute samples, oldest first, paged.
#[utoipa::path(get, path = "/api/v1/services/{service_id}/metrics/{metric}/samples", tag = "metrics",
    params(("service_id" = Uuid, Path), ("metric" = String, Path, min_length = 1, pattern = r"^[^\u0000]*$", description = "e.g. error_rate"), SampleParams),
    responses((status = 200, body = PageBody<Sample>)))]
pub async fn list_samples(
    Reader(tenant): Reader,
    Path((service_id, metric)): Path<(Uuid, String)>,
    Query(params): Query<SampleParams>,
) -> Result<Json<PageBody<Sample>>, ApiError> {
    let page = PageRequest::new(params.limit, params.cursor.as_deref())?;
    let to = params.to.unwrap_or_else(Utc::now);
    let from = params.from.unwrap_or(to - Duration::hours(1));
    Ok(Json(
        tenant
            .metric_samples(service_id, &metric, from, to, &page)
            .await?
            .into(),
    ))
}
