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
use crate::http::problem::ApiError;
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
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentListParams),
    responses((status = 200, body = PageBody<Incident>)))]
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
    responses((status = 200, body = IncidentDetail)))]
pub async fn get_incident(
    Reader(tenant): Reader,
    Path(incident_id): Path<Uuid>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(tenant.incident(incident_id).await?))
}

/// One incident by its number (42 for INC-42), as `GET /api/v1/incidents/{incident_id}` returns it.
#[utoipa::path(get, path = "/api/v1/incidents/by-number/{number}", tag = "incidents",
    params(("number" = i32, Path, description = "The incident's number in its organisation, e.g. 42 for INC-42")),
    responses((status = 200, body = IncidentDetail)))]
pub async fn get_incident_by_number(
    Reader(tenant): Reader,
    Path(number): Path<i32>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(tenant.incident_by_number(number).await?))
}

/// Opens an incident. Send an `Idempotency-Key` header (e.g. a UUID) to make retries safe: a
/// retry with the same key and body returns the same incident with `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/api/v1/incidents", tag = "incidents",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "Makes retries safe; 1 to 255 visible ASCII characters, e.g. a UUID")),
    request_body = NewIncident,
    responses(
        (status = 201, body = IncidentDetail, headers(
            ("Location" = String, description = "The incident's URL"),
            ("Idempotent-Replayed" = String, description = "`true` when this answers a retry and nothing new was created"),
        )),
        (status = 404, description = "A named service, alert or commander is not in the organisation"),
        (status = 409, description = "A named alert belongs to another incident"),
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

/// The optional body of an acknowledgement: an empty object (nothing to say yet).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// How it was resolved, recorded in the timeline: 1 to 10000 characters, not only
    /// whitespace, no NUL.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = r"^[^\u0000]*[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\u0000][^\u0000]*$"
    )]
    pub note: Option<String>,
}

/// Acknowledges an open incident (409 when it is not open). The body is optional; when sent it
/// is an empty object.
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/acknowledge", tag = "incidents",
    params(("incident_id" = Uuid, Path)),
    request_body(content = Option<AcknowledgeRequest>, description = "Optional: no body, or an empty object", content_type = "application/json"),
    responses(
        (status = 200, body = IncidentDetail),
        (status = 409, description = "The incident is not open"),
    ))]
pub async fn acknowledge_incident(
    Writer(tenant): Writer,
    Path(incident_id): Path<Uuid>,
    OptionalJson(_nothing): OptionalJson<AcknowledgeRequest>,
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
    request_body(content = Option<ResolveRequest>, description = "Optional: no body, or an object", content_type = "application/json"),
    responses(
        (status = 200, body = IncidentDetail),
        (status = 409, description = "The incident is already resolved"),
    ))]
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
    /// The note: 1 to 10000 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = r"^[^\u0000]*[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\u0000][^\u0000]*$"
    )]
    pub body: String,
}

/// Adds a note to the incident's timeline. Honours `Idempotency-Key` like incident creation.
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/notes", tag = "incidents",
    params(("incident_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
            description = "Makes retries safe; 1 to 255 visible ASCII characters, e.g. a UUID")),
    request_body = NoteRequest,
    responses(
        (status = 201, body = TimelineEvent, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this answers a retry and nothing new was created"),
        )),
    ))]
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
    responses(
        (status = 200, body = IncidentDetail),
        (status = 409, description = "The alert belongs to another incident, or the incident is resolved"),
    ))]
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
