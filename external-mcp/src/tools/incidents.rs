//! The `incidents` toolset: list and read incidents with their timeline, and the changes a
//! responder makes (open, acknowledge, resolve, add a note).
//!
//! Creations carry an `Idempotency-Key`, one per tool call and reused by the client's retries, so
//! a retried request never opens two incidents or adds two notes. Acknowledging or resolving an
//! incident that is already in that state is reported as "no change", not as a failure.

use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use uuid::Uuid;

use super::alerts::enum_text;
use super::run::Parameters;
use super::{
    AlertBrief, AlertItem, IncidentItem, IncidentStatus, Json, Readable, Severity, TimelineItem,
    ToolCall, ToolFailure, hint_line, incident_detail, list_hint, resolve_incident,
    resolve_service, service_and_since,
};
use crate::api::{self, NewIncident};
use crate::bounded;
use crate::error::Error;
use crate::server::ExternalServer;

/// Timeline entries and alerts one `get_incident` shows (the most recent ones).
const MAX_TIMELINE: usize = 40;
const MAX_ALERTS: usize = 20;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIncidentsArgs {
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    /// Service name, e.g. checkout-api.
    pub service: Option<String>,
    /// Opened within this long (30m, 6h, 7d) or since an RFC 3339 time.
    pub since: Option<String>,
    /// Default 20.
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
    /// next_cursor of the previous call.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentArgs {
    /// INC-42, 42, or the incident's id.
    pub incident: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenIncidentArgs {
    /// One line saying what is wrong, at most 200 characters.
    pub title: String,
    pub severity: Severity,
    /// What is known so far.
    pub summary: Option<String>,
    /// Affected service names.
    #[serde(default)]
    pub services: Vec<String>,
    /// Ids of alerts to link.
    #[serde(default)]
    pub alert_ids: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveArgs {
    /// INC-42, 42, or the incident's id.
    pub incident: String,
    /// How it was resolved, for the timeline.
    pub resolution: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteArgs {
    /// INC-42, 42, or the incident's id.
    pub incident: String,
    /// The note, 1 to 10000 characters.
    pub note: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentItem>,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: IncidentItem,
    pub summary: String,
    pub created_by: Option<String>,
    pub alerts: Vec<AlertBrief>,
    /// Oldest first; the most recent entries when cut.
    pub timeline: Vec<TimelineItem>,
    pub truncated: bool,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentChange {
    /// False when the incident already was in the asked state.
    pub changed: bool,
    pub message: String,
    pub reference: String,
    pub id: String,
    /// open, acknowledged or resolved.
    pub status: String,
    pub web_url: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NoteAdded {
    pub reference: String,
    pub id: String,
    pub web_url: String,
    pub note: TimelineItem,
}

#[tool_router(router = incidents_router, vis = "pub(crate)")]
impl ExternalServer {
    #[tool(
        title = "List incidents",
        description = "List incidents, newest first, filtered by status (open/acknowledged/resolved), severity, service and opening time.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_incidents(
        &self,
        arguments: Parameters<ListIncidentsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentList>, ToolFailure> {
        self.run(arguments, context, "list incidents", list).await
    }

    #[tool(
        title = "Get incident",
        description = "One incident with its summary, affected services, linked alerts and timeline (notes, acknowledgement, resolution).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn get_incident(
        &self,
        arguments: Parameters<IncidentArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentView>, ToolFailure> {
        self.run(
            arguments,
            context,
            "get the incident",
            async |call: &ToolCall, args: IncidentArgs| view(call, &args.incident).await,
        )
        .await
    }

    #[tool(
        title = "Open incident",
        description = "Open a new incident as the token's user. Each call opens one incident: check list_incidents first to avoid a duplicate.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn open_incident(
        &self,
        arguments: Parameters<OpenIncidentArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentChange>, ToolFailure> {
        self.run(arguments, context, "open the incident", open)
            .await
    }

    #[tool(
        title = "Acknowledge incident",
        description = "Acknowledge an open incident: tells others someone is on it. Already acknowledged is no change.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn acknowledge_incident(
        &self,
        arguments: Parameters<IncidentArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentChange>, ToolFailure> {
        self.run(
            arguments,
            context,
            "acknowledge the incident",
            async |call: &ToolCall, args: IncidentArgs| acknowledge(call, &args.incident).await,
        )
        .await
    }

    #[tool(
        title = "Resolve incident",
        description = "Resolve an incident, with how it was resolved. Final: a resolved incident cannot be reopened. Confirm with the user first.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn resolve_incident(
        &self,
        arguments: Parameters<ResolveArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentChange>, ToolFailure> {
        self.run(arguments, context, "resolve the incident", resolve)
            .await
    }

    #[tool(
        title = "Add incident note",
        description = "Add a note to an incident's timeline (findings, actions taken). Each call adds one note.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn add_incident_note(
        &self,
        arguments: Parameters<NoteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<NoteAdded>, ToolFailure> {
        self.run(arguments, context, "add the note", add_note).await
    }
}

#[instrument(skip_all, fields(tool = "list_incidents"))]
pub async fn list(call: &ToolCall, args: ListIncidentsArgs) -> Result<IncidentList, Error> {
    let filters = service_and_since(call, args.service.as_deref(), args.since.as_deref())
        .await?
        .with("status", args.status.map(|status| enum_text(&status)))
        .with(
            "severity",
            args.severity.map(|severity| enum_text(&severity)),
        );
    let links = &call.links;
    let slice = bounded::api_slice(
        "list_incidents",
        args.cursor.as_deref(),
        args.limit,
        async |cursor, limit| {
            call.api
                .incidents(&filters.clone().page(limit, cursor.as_deref()))
                .await
        },
        |item| IncidentItem::from_api(item, links),
    )
    .await?;
    let incidents = slice.items;
    let hint = if incidents.is_empty() {
        Some("No incidents match: widen `since` or drop a filter.".to_owned())
    } else if slice.truncated {
        Some("Narrow with status, severity, service or since to see fewer.".to_owned())
    } else {
        None
    };
    let hint = list_hint(slice.next_cursor.as_deref(), hint);
    Ok(IncidentList {
        incidents,
        truncated: slice.truncated,
        next_cursor: slice.next_cursor,
        hint,
    })
}

#[instrument(skip_all, fields(tool = "get_incident"))]
pub async fn view(call: &ToolCall, reference: &str) -> Result<IncidentView, Error> {
    let detail = incident_detail(call, reference).await?;
    Ok(incident_view(detail, call))
}

pub fn incident_view(detail: api::IncidentDetail, call: &ToolCall) -> IncidentView {
    let api::IncidentDetail {
        incident,
        alerts,
        timeline,
    } = detail;
    let truncated = alerts.len() > MAX_ALERTS || timeline.len() > MAX_TIMELINE;
    let skip = timeline.len().saturating_sub(MAX_TIMELINE);
    IncidentView {
        summary: incident.summary.clone(),
        created_by: incident.created_by.as_ref().map(|user| user.name.clone()),
        alerts: alerts
            .into_iter()
            .take(MAX_ALERTS)
            .map(|alert| AlertBrief::from_item(AlertItem::from_api(alert, &call.links)))
            .collect(),
        timeline: timeline
            .into_iter()
            .skip(skip)
            .map(TimelineItem::from_api)
            .collect(),
        truncated,
        hint: truncated.then(|| {
            format!(
                "Only the latest {MAX_TIMELINE} timeline entries and first {MAX_ALERTS} alerts are shown; the web_url has all."
            )
        }),
        incident: IncidentItem::from_api(incident, &call.links),
    }
}

#[instrument(skip_all, fields(tool = "open_incident"))]
pub async fn open(call: &ToolCall, args: OpenIncidentArgs) -> Result<IncidentChange, Error> {
    let title = args.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(Error::InvalidInput(
            "`title` must be 1 to 200 characters".into(),
        ));
    }
    if args.services.len() > 20 || args.alert_ids.len() > 50 {
        return Err(Error::InvalidInput(
            "at most 20 services and 50 alerts per incident".into(),
        ));
    }
    let mut service_ids = Vec::with_capacity(args.services.len());
    for name in &args.services {
        service_ids.push(resolve_service(&call.api, name).await?.id);
    }
    let alert_ids = args
        .alert_ids
        .iter()
        .map(|id| {
            id.trim().parse::<Uuid>().map_err(|_| {
                Error::InvalidInput(format!(
                    "`alert_ids` holds `{id}`, which is not an alert id (see list_alerts)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = NewIncident {
        title: title.to_owned(),
        severity: enum_text(&args.severity),
        summary: args.summary.unwrap_or_default(),
        service_ids,
        alert_ids,
    };
    // One key per logical call: the client's retries of this call reuse it.
    let idempotency_key = Uuid::new_v4().to_string();
    let detail = call.api.create_incident(&body, &idempotency_key).await?;
    let incident = IncidentItem::from_api(detail.incident, &call.links);
    Ok(IncidentChange::new(
        true,
        format!("Opened {} \"{}\".", incident.reference, incident.title),
        incident,
    ))
}

#[instrument(skip_all, fields(tool = "acknowledge_incident"))]
pub async fn acknowledge(call: &ToolCall, reference: &str) -> Result<IncidentChange, Error> {
    let id = resolve_incident(call, reference).await?;
    match call.api.acknowledge_incident(id).await {
        Ok(detail) => {
            let incident = IncidentItem::from_api(detail.incident, &call.links);
            Ok(IncidentChange::new(
                true,
                format!(
                    "Acknowledged {} as {}.",
                    incident.reference, call.identity.user_name
                ),
                incident,
            ))
        }
        Err(Error::Conflict { detail }) => {
            let current = call.api.incident(id).await?;
            let incident = IncidentItem::from_api(current.incident, &call.links);
            if incident.status == "acknowledged" {
                return Ok(IncidentChange::new(
                    false,
                    format!(
                        "{} was already acknowledged; nothing changed.",
                        incident.reference
                    ),
                    incident,
                ));
            }
            Err(Error::Conflict {
                detail: format!("{} is {}: {detail}", incident.reference, incident.status),
            })
        }
        Err(error) => Err(error),
    }
}

#[instrument(skip_all, fields(tool = "resolve_incident"))]
pub async fn resolve(call: &ToolCall, args: ResolveArgs) -> Result<IncidentChange, Error> {
    let id = resolve_incident(call, &args.incident).await?;
    let resolution = args
        .resolution
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty());
    match call.api.resolve_incident(id, resolution).await {
        Ok(detail) => {
            let incident = IncidentItem::from_api(detail.incident, &call.links);
            Ok(IncidentChange::new(
                true,
                format!("Resolved {}.", incident.reference),
                incident,
            ))
        }
        Err(Error::Conflict { detail }) => {
            let current = call.api.incident(id).await?;
            let incident = IncidentItem::from_api(current.incident, &call.links);
            if incident.status == "resolved" {
                return Ok(IncidentChange::new(
                    false,
                    format!(
                        "{} was already resolved; nothing changed.",
                        incident.reference
                    ),
                    incident,
                ));
            }
            Err(Error::Conflict { detail })
        }
        Err(error) => Err(error),
    }
}

#[instrument(skip_all, fields(tool = "add_incident_note"))]
pub async fn add_note(call: &ToolCall, args: NoteArgs) -> Result<NoteAdded, Error> {
    let note = args.note.trim();
    if note.is_empty() || note.chars().count() > 10_000 {
        return Err(Error::InvalidInput(
            "`note` must be 1 to 10000 characters".into(),
        ));
    }
    let id = resolve_incident(call, &args.incident).await?;
    let idempotency_key = Uuid::new_v4().to_string();
    let event = call.api.add_note(id, note, &idempotency_key).await?;
    let detail = call.api.incident(id).await?;
    Ok(NoteAdded {
        reference: detail.incident.reference,
        id: id.to_string(),
        web_url: call.links.incident(id),
        note: TimelineItem::from_api(event),
    })
}

impl Readable for IncidentList {
    fn readable(&self) -> String {
        let mut text = format!("Incidents: {}", self.incidents.len());
        for incident in &self.incidents {
            text.push('\n');
            text.push_str(&incident.line());
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}

impl Readable for IncidentView {
    fn readable(&self) -> String {
        let incident = &self.incident;
        let mut text = incident.line().trim_start_matches("- ").to_owned();
        if let Some(commander) = &incident.commander {
            text.push_str(&format!("\nCommander: {commander}"));
        }
        if !self.summary.is_empty() {
            text.push_str(&format!("\nSummary: {}", self.summary));
        }
        text.push_str(&format!("\nLinked alerts ({}):", self.alerts.len()));
        for alert in &self.alerts {
            text.push('\n');
            text.push_str(&alert.line());
        }
        text.push_str(&format!("\nTimeline ({} entries):", self.timeline.len()));
        for entry in &self.timeline {
            text.push('\n');
            text.push_str(&entry.line());
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}

impl IncidentChange {
    fn new(changed: bool, message: String, incident: IncidentItem) -> Self {
        Self {
            changed,
            message,
            reference: incident.reference,
            id: incident.id,
            status: incident.status,
            web_url: incident.web_url,
        }
    }
}

impl Readable for IncidentChange {
    fn readable(&self) -> String {
        format!(
            "{} {} is {}: {}",
            self.message, self.reference, self.status, self.web_url
        )
    }
}

impl Readable for NoteAdded {
    fn readable(&self) -> String {
        format!(
            "Added a note to {} ({}):\n{}",
            self.reference,
            self.web_url,
            self.note.line()
        )
    }
}
