//! Incidents: list, read with timeline, open, acknowledge, resolve, add notes, link alerts.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::incidents::{
    Created, Incident, IncidentDetail, IncidentFilter, NewIncident, TimelineEvent, Transition,
};
use crate::domain::kinds::{IncidentStatus, Severity};
use crate::domain::page::PageRequest;
use crate::http::auth::{Reader, Writer};
use crate::http::extract::{Json, OptionalJson, Path, Query};
use crate::http::problem::{ApiError, Problem};
use crate::http::routes::PageBody;

/// The header that makes a creating request safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on the answer to a retried request that created nothing new.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentListParams {
    status: Option<IncidentStatus>,
    severity: Option<Severity>,
    /// Incidents affecting this service.
    service_id: Option<Uuid>,
    /// Incidents opened at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Incidents opened before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentListParams),
    responses((status = 200, body = PageBody<Incident>), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn list_incidents(
    Reader(tenant): Reader,
    Query(params): Query<IncidentListParams>,
) -> Result<Json<PageBody<Incident>>, ApiError> {
    let page = PageRequest::new(params.limit, params.cursor.as_deref())?;
    let filter = IncidentFilter {
        status: params.status,
        severity: params.severity,
        service_id: params.service_id,
        since: params.since,
        until: params.until,
    };
    Ok(Json(tenant.list_incidents(&filter, &page).await?.into()))
}

/// One incident with its linked alerts and timeline.
#[utoipa::path(get, path = "/api/v1/incidents/{incident_id}", tag = "incidents",
    params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentDetail), (status = 404, body = Problem)))]
pub async fn get_incident(
    Reader(tenant): Reader,
    Path(incident_id): Path<Uuid>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(tenant.incident(incident_id).await?))
}

/// One incident by its number (42 for INC-42), as `GET /api/v1/incidents/{incident_id}` returns it.
#[utoipa::path(get, path = "/api/v1/incidents/by-number/{number}", tag = "incidents",
    params(("number" = i32, Path, description = "The incident's number in its organisation, e.g. 42 for INC-42")),
    responses((status = 200, body = IncidentDetail), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get_incident_by_number(
    Reader(tenant): Reader,
    Path(number): Path<i32>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(tenant.incident_by_number(number).await?))
}

/// Opens an incident. Send an `Idempotency-Key` header (e.g. a UUID) to make retries safe: a
/// retry with the same key and body returns the same incident with `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/api/v1/incidents", tag = "incidents",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe; 1 to 255 visible ASCII characters")),
    request_body = NewIncident,
    responses(
        (status = 201, body = IncidentDetail),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn create_incident(
    Writer(tenant): Writer,
    headers: HeaderMap,
    Json(input): Json<NewIncident>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let created = tenant.create_incident(&input, key).await?;
    let location = format!("/api/v1/incidents/{}", created.resource.incident.id);
    Ok(created_response(created, Some(location)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// How it was resolved, recorded in the timeline.
    #[serde(default)]
    pub note: Option<String>,
}

/// Acknowledges an open incident (409 when it is not open).
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/acknowledge", tag = "incidents",
    params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentDetail), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn acknowledge_incident(
    Writer(tenant): Writer,
    Path(incident_id): Path<Uuid>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(
        tenant
            .transition_incident(incident_id, Transition::Acknowledge, None)
            .await?,
    ))
}

/// Resolves an open or acknowledged incident (409 when already resolved). The body is optional.
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/resolve", tag = "incidents",
    params(("incident_id" = Uuid, Path)),
    request_body(content = Option<ResolveRequest>),
    responses((status = 200, body = IncidentDetail), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn resolve_incident(
    Writer(tenant): Writer,
    Path(incident_id): Path<Uuid>,
    OptionalJson(body): OptionalJson<ResolveRequest>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let note = body.and_then(|request| request.note);
    Ok(Json(
        tenant
            .transition_incident(incident_id, Transition::Resolve, note.as_deref())
            .await?,
    ))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// The note, 1 to 10000 characters.
    pub body: String,
}

/// Adds a note to the incident's timeline. Honours `Idempotency-Key` like incident creation.
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/notes", tag = "incidents",
    params(("incident_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NoteRequest,
    responses((status = 201, body = TimelineEvent), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn add_note(
    Writer(tenant): Writer,
    Path(incident_id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<NoteRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let created = tenant
        .add_incident_note(incident_id, &request.body, key)
        .await?;
    Ok(created_response(created, None))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkAlertRequest {
    pub alert_id: Uuid,
}

/// Links an alert to the incident (its service becomes affected too). Linking it again changes
/// nothing; an alert of another incident is a 409.
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/alerts", tag = "incidents",
    params(("incident_id" = Uuid, Path)),
    request_body = LinkAlertRequest,
    responses((status = 200, body = IncidentDetail), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn link_alert(
    Writer(tenant): Writer,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<LinkAlertRequest>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(
        tenant.link_alert(incident_id, request.alert_id).await?,
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII characters"))
}

fn created_response<T: Serialize>(created: Created<T>, location: Option<String>) -> Response {
    let mut response = (StatusCode::CREATED, Json(created.resource)).into_response();
    let headers = response.headers_mut();
    if let Some(location) = location.and_then(|location| HeaderValue::from_str(&location).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if created.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
