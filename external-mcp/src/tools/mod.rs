//! The tools, one module per toolset, and what they share: the result wrappers, the closed
//! vocabularies of their arguments, time parsing, name resolution and the items of results.
//!
//! Tools express intent ("how is checkout-api doing?"), not endpoints: they accept the names
//! people use, combine API calls, and summarise. Each returns `structuredContent` matching its
//! `outputSchema`, plus a short readable text of the same facts. Every tool method is one call of
//! [`run`]'s `ExternalServer::run`, the one path for arguments, setup and failures.

pub mod alerts;
pub mod deployments;
pub mod incidents;
pub mod metrics;
pub mod run;
pub mod services;

use chrono::{DateTime, Duration, Utc};
use rmcp::handler::server::tool::{IntoCallToolResult, ToolRouter};
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{self, CallerApi, ListQuery};
use crate::bounded::Progress;
use crate::config::{Settings, Toolset};
use crate::credentials::Identity;
use crate::error::Error;
use crate::links::Links;
use crate::server::ExternalServer;

/// The tools that change something; absent from the list in read-only mode or for a token
/// without the `write` scope.
pub const WRITE_TOOLS: [&str; 4] = [
    "open_incident",
    "acknowledge_incident",
    "resolve_incident",
    "add_incident_note",
];

/// A tool's successful result: `structuredContent` plus a short readable text.
///
/// Named like rmcp's own wrapper on purpose: `#[tool]` derives a tool's `outputSchema` from a
/// return type written `Json<T>` (or `Result<Json<T>, E>`), whichever module `Json` comes from.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// How a result reads as text: the facts a person (or a model that ignores structured content)
/// needs, one line per item, no JSON.
pub trait Readable {
    fn readable(&self) -> String;
}

/// A tool call that failed in a way the user should read: becomes a result with `isError`.
#[derive(Debug)]
pub struct ToolFailure(pub String);

/// What a tool body works with: the caller's API client, who they are, links and progress.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub api: CallerApi,
    pub identity: Identity,
    pub links: Links,
    pub progress: Progress,
}

/// Severity of alerts and incidents, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum AlertState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum DeploymentStatus {
    InProgress,
    Succeeded,
    Failed,
    RolledBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum Health {
    Healthy,
    Degraded,
    Critical,
}

/// Tier 1 is customer facing and paged first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum Tier {
    #[serde(rename = "tier_1")]
    Tier1,
    #[serde(rename = "tier_2")]
    Tier2,
    #[serde(rename = "tier_3")]
    Tier3,
}

/// An alert as results show it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AlertItem {
    pub id: String,
    pub service: String,
    pub monitor: String,
    pub severity: String,
    /// firing or resolved.
    pub state: String,
    pub summary: String,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged: bool,
    pub incident_id: Option<String>,
    pub web_url: String,
}

/// An alert in short, inside a larger result (list_alerts has the rest).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AlertBrief {
    pub id: String,
    pub severity: String,
    /// firing or resolved.
    pub state: String,
    pub summary: String,
    pub started_at: DateTime<Utc>,
    pub web_url: String,
}

/// An incident in short, inside a larger result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentBrief {
    pub reference: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub web_url: String,
}

/// A deployment in short, inside a larger result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeploymentBrief {
    pub version: String,
    /// in_progress, succeeded, failed or rolled_back.
    pub status: String,
    pub deployed_by: String,
    pub started_at: DateTime<Utc>,
    pub description: String,
    pub web_url: String,
}

/// An incident as results show it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentItem {
    pub id: String,
    /// How people name it, e.g. INC-42.
    pub reference: String,
    pub title: String,
    pub severity: String,
    /// open, acknowledged or resolved.
    pub status: String,
    pub services: Vec<String>,
    pub commander: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub web_url: String,
}

/// A deployment as results show it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeploymentItem {
    pub id: String,
    pub service: String,
    pub version: String,
    pub commit_sha: String,
    pub deployed_by: String,
    /// in_progress, succeeded, failed or rolled_back.
    pub status: String,
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub web_url: String,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimelineItem {
    pub at: DateTime<Utc>,
    /// opened, acknowledged, resolved, note or alert_linked.
    pub kind: String,
    pub author: Option<String>,
    pub body: String,
}

/// The tools offered for `settings`: the selected toolsets, without the write tools in read-only
/// mode. Scopes narrow this further per caller (see `server`).
pub fn router_for(settings: &Settings) -> ToolRouter<ExternalServer> {
    let mut router = ToolRouter::new();
    for toolset in &settings.toolsets {
        router += match toolset {
            Toolset::Services => ExternalServer::services_router(),
            Toolset::Metrics => ExternalServer::metrics_router(),
            Toolset::Alerts => ExternalServer::alerts_router(),
            Toolset::Incidents => ExternalServer::incidents_router(),
            Toolset::Deployments => ExternalServer::deployments_router(),
        };
    }
    if settings.read_only {
        for name in WRITE_TOOLS {
            router.remove_route(name);
        }
    }
    for route in router.map.values_mut() {
        compact_definition(&mut route.attr);
    }
    router
}

/// Trims what models gain nothing from out of a tool's schemas, since every byte of tools/list
/// sits in the context window of every conversation: the `$schema` URI, numeric formats
/// (`int64`, `double`, ...), and the descriptions of output sub-types (their fields keep theirs).
pub fn compact_definition(tool: &mut rmcp::model::Tool) {
    let mut input = serde_json::Value::Object(tool.input_schema.as_ref().clone());
    compact_schema(&mut input, false);
    if let serde_json::Value::Object(input) = input {
        tool.input_schema = std::sync::Arc::new(input);
    }
    if let Some(output) = &tool.output_schema {
        let mut output = serde_json::Value::Object(output.as_ref().clone());
        compact_schema(&mut output, true);
        if let serde_json::Value::Object(output) = output {
            tool.output_schema = Some(std::sync::Arc::new(output));
        }
    }
}

fn compact_schema(schema: &mut serde_json::Value, output: bool) {
    match schema {
        serde_json::Value::Object(map) => {
            map.remove("$schema");
            let numeric_format = map
                .get("format")
                .and_then(|format| format.as_str())
                .is_some_and(|format| {
                    format.starts_with("int")
                        || format.starts_with("uint")
                        || format == "double"
                        || format == "float"
                });
            if numeric_format || output {
                map.remove("format");
            }
            if numeric_format && map.get("minimum") == Some(&serde_json::json!(0)) {
                map.remove("minimum");
            }
            if let Some(serde_json::Value::Object(definitions)) = map.get_mut("$defs") {
                for definition in definitions.values_mut() {
                    if let serde_json::Value::Object(definition) = definition {
                        definition.remove("description");
                    }
                }
            }
            for value in map.values_mut() {
                compact_schema(value, output);
            }
        }
        serde_json::Value::Array(values) => {
            for value in values {
                compact_schema(value, output);
            }
        }
        _ => {}
    }
}

/// Every tool this server has, whatever the configuration: for tests and documentation.
pub fn all_tools() -> Vec<rmcp::model::Tool> {
    router_for(&all_tools_settings()).list_all()
}

/// Settings that offer every tool (toward a placeholder API): for tests and documentation.
pub fn all_tools_settings() -> Settings {
    let localhost = url::Url::parse("http://localhost/").expect("a literal URL parses");
    Settings {
        api_url: localhost.clone(),
        web_url: localhost,
        read_only: false,
        toolsets: Toolset::ALL.to_vec(),
        api: crate::config::ApiOptions::default(),
    }
}

pub fn is_write_tool(name: &str) -> bool {
    WRITE_TOOLS.contains(&name)
}

impl<T: Serialize + JsonSchema + Readable + 'static> IntoCallToolResult for Json<T> {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        let text = self.0.readable();
        let value = serde_json::to_value(&self.0).map_err(|error| {
            rmcp::ErrorData::internal_error(format!("cannot serialize the result: {error}"), None)
        })?;
        let mut result = CallToolResult::structured(value);
        result.content = vec![ContentBlock::text(text)];
        Ok(result.into())
    }
}

impl IntoCallToolResult for ToolFailure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        Ok(CallToolResult::error(vec![ContentBlock::text(self.0)]).into())
    }
}

impl ToolFailure {
    pub fn new(action: &str, error: &Error) -> Self {
        if !matches!(error, Error::Cancelled) {
            tracing::info!(action, error = %error, "tool call failed");
        }
        Self(error.for_tool(action))
    }
}

/// The filters the listings share, as API query parameters: the service a name designates
/// (resolved to its id; a blank name filters nothing) and the earliest start time.
pub async fn service_and_since(
    call: &ToolCall,
    service: Option<&str>,
    since: Option<&str>,
) -> Result<ListQuery, Error> {
    let service_id = match service.filter(|name| !name.trim().is_empty()) {
        Some(name) => Some(resolve_service(&call.api, name).await?.id),
        None => None,
    };
    let since = since.map(|since| parse_since(since, "since")).transpose()?;
    Ok(ListQuery::new()
        .with("service_id", service_id)
        .with("since", since.map(|since| since.to_rfc3339())))
}

/// Parses `since`: a duration back from now (`30m`, `6h`, `7d`, `2w`) or an RFC 3339 time.
pub fn parse_since(text: &str, field: &str) -> Result<DateTime<Utc>, Error> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = parse_duration(text, field)?;
    Ok(Utc::now() - duration)
}

/// Parses a duration such as `90m`, `6h`, `7d` or `2w`.
pub fn parse_duration(text: &str, field: &str) -> Result<Duration, Error> {
    let invalid = || {
        Error::InvalidInput(format!(
            "`{field}` must be a duration like 30m, 6h, 7d or 2w (or an RFC 3339 time), not `{text}`"
        ))
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (amount, unit) = text.split_at(split);
    let amount: i64 = amount.parse().map_err(|_| invalid())?;
    if amount <= 0 || amount > 100_000 {
        return Err(invalid());
    }
    match unit.trim() {
        "m" | "min" | "minutes" => Ok(Duration::minutes(amount)),
        "h" | "hours" => Ok(Duration::hours(amount)),
        "d" | "days" => Ok(Duration::days(amount)),
        "w" | "weeks" => Ok(Duration::weeks(amount)),
        _ => Err(invalid()),
    }
}

/// Finds a service by its exact name (case-insensitive) or id; a near miss lists candidates.
pub async fn resolve_service(api: &CallerApi, reference: &str) -> Result<api::Service, Error> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(Error::InvalidInput(
            "`service` is empty: give a service name such as checkout-api".into(),
        ));
    }
    if let Ok(id) = reference.parse::<Uuid>() {
        return api.service(id).await;
    }
    let page = api
        .services(&ListQuery::new().with("q", Some(reference)).page(200, None))
        .await?;
    if let Some(service) = page
        .items
        .iter()
        .find(|service| service.name.eq_ignore_ascii_case(reference))
    {
        return Ok(service.clone());
    }
    let candidates: Vec<&str> = page
        .items
        .iter()
        .take(5)
        .map(|service| service.name.as_str())
        .collect();
    let detail = if candidates.is_empty() {
        format!("no service is named `{reference}`")
    } else {
        format!(
            "no service is named exactly `{reference}`; did you mean {}?",
            candidates.join(", ")
        )
    };
    Err(Error::NotFound { detail })
}

/// How a person or model names an incident: its id, or its number (`INC-42`, `#42`, `42`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentReference {
    Id(Uuid),
    Number(i32),
}

impl IncidentReference {
    pub fn parse(reference: &str) -> Result<Self, Error> {
        let reference = reference.trim();
        if let Ok(id) = reference.parse::<Uuid>() {
            return Ok(Self::Id(id));
        }
        let digits = reference
            .trim_start_matches(['#'])
            .trim_start_matches("INC-")
            .trim_start_matches("inc-")
            .trim_start_matches("Inc-");
        match digits.parse::<i32>() {
            Ok(number) if number > 0 => Ok(Self::Number(number)),
            _ => Err(Error::InvalidInput(format!(
                "`incident` must be a reference like INC-42, a number, or an incident id, not `{reference}`"
            ))),
        }
    }
}

/// The incident `reference` names, with its alerts and timeline: one API call either way (the
/// API looks numbers up by index, `GET /api/v1/incidents/by-number/{number}`).
pub async fn incident_detail(
    call: &ToolCall,
    reference: &str,
) -> Result<api::IncidentDetail, Error> {
    match IncidentReference::parse(reference)? {
        IncidentReference::Id(id) => call.api.incident(id).await,
        IncidentReference::Number(number) => call.api.incident_by_number(number).await,
    }
}

/// The id of the incident `reference` names (no API call for an id).
pub async fn resolve_incident(call: &ToolCall, reference: &str) -> Result<Uuid, Error> {
    match IncidentReference::parse(reference)? {
        IncidentReference::Id(id) => Ok(id),
        IncidentReference::Number(number) => {
            Ok(call.api.incident_by_number(number).await?.incident.id)
        }
    }
}

/// A number rounded to `digits` decimals, for results that are read, not computed with.
pub fn rounded(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}

impl AlertItem {
    pub fn from_api(alert: api::Alert, links: &Links) -> Self {
        Self {
            web_url: links.alert(alert.id),
            id: alert.id.to_string(),
            service: alert.service_name,
            monitor: alert.monitor_name,
            severity: alert.severity,
            state: alert.state,
            summary: alert.summary,
            started_at: alert.started_at,
            resolved_at: alert.resolved_at,
            acknowledged: alert.acknowledged_at.is_some(),
            incident_id: alert.incident_id.map(|id| id.to_string()),
        }
    }

    pub fn line(&self) -> String {
        let acknowledged = if self.acknowledged {
            ", acknowledged"
        } else {
            ""
        };
        format!(
            "- [{} {}{acknowledged}] {}: {} (since {}) {}",
            self.severity,
            self.state,
            self.service,
            self.summary,
            short_time(self.started_at),
            self.web_url
        )
    }
}

impl AlertBrief {
    pub fn from_item(alert: AlertItem) -> Self {
        Self {
            id: alert.id,
            severity: alert.severity,
            state: alert.state,
            summary: alert.summary,
            started_at: alert.started_at,
            web_url: alert.web_url,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "- [{} {}] {} (since {}) {}",
            self.severity,
            self.state,
            self.summary,
            short_time(self.started_at),
            self.web_url
        )
    }
}

impl IncidentBrief {
    pub fn from_item(incident: IncidentItem) -> Self {
        Self {
            reference: incident.reference,
            title: incident.title,
            severity: incident.severity,
            status: incident.status,
            opened_at: incident.opened_at,
            web_url: incident.web_url,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "- {} [{} {}] {} (opened {}) {}",
            self.reference,
            self.severity,
            self.status,
            self.title,
            short_time(self.opened_at),
            self.web_url
        )
    }
}

impl DeploymentBrief {
    pub fn from_item(deployment: DeploymentItem) -> Self {
        Self {
            version: deployment.version,
            status: deployment.status,
            deployed_by: deployment.deployed_by,
            started_at: deployment.started_at,
            description: deployment.description,
            web_url: deployment.web_url,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "- {} [{}] by {} at {}: {} {}",
            self.version,
            self.status,
            self.deployed_by,
            short_time(self.started_at),
            self.description,
            self.web_url
        )
    }
}

impl IncidentItem {
    pub fn from_api(incident: api::Incident, links: &Links) -> Self {
        Self {
            web_url: links.incident(incident.id),
            id: incident.id.to_string(),
            reference: incident.reference,
            title: incident.title,
            severity: incident.severity,
            status: incident.status,
            services: incident
                .services
                .into_iter()
                .map(|service| service.name)
                .collect(),
            commander: incident.commander.map(|user| user.name),
            opened_at: incident.opened_at,
            acknowledged_at: incident.acknowledged_at,
            resolved_at: incident.resolved_at,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "- {} [{} {}] {} — services: {}; opened {} {}",
            self.reference,
            self.severity,
            self.status,
            self.title,
            if self.services.is_empty() {
                "none".to_owned()
            } else {
                self.services.join(", ")
            },
            short_time(self.opened_at),
            self.web_url
        )
    }
}

impl DeploymentItem {
    pub fn from_api(deployment: api::Deployment, links: &Links) -> Self {
        Self {
            web_url: links.deployment(&deployment.service_name, deployment.id),
            id: deployment.id.to_string(),
            service: deployment.service_name,
            version: deployment.version,
            commit_sha: deployment.commit_sha,
            deployed_by: deployment.deployed_by,
            status: deployment.status,
            description: deployment.description,
            started_at: deployment.started_at,
            finished_at: deployment.finished_at,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "- {} {} [{}] by {} at {}: {} {}",
            self.service,
            self.version,
            self.status,
            self.deployed_by,
            short_time(self.started_at),
            self.description,
            self.web_url
        )
    }
}

impl TimelineItem {
    pub fn from_api(event: api::TimelineEvent) -> Self {
        Self {
            at: event.at,
            kind: event.kind,
            author: event.author.map(|user| user.name),
            body: event.body,
        }
    }

    pub fn line(&self) -> String {
        let author = self.author.as_deref().unwrap_or("system");
        if self.body.is_empty() {
            format!("- {} {} by {author}", short_time(self.at), self.kind)
        } else {
            format!(
                "- {} {} by {author}: {}",
                short_time(self.at),
                self.kind,
                self.body
            )
        }
    }
}

/// `2026-01-05 12:00Z`: minutes are precise enough for people and models.
pub fn short_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%MZ").to_string()
}

/// A list's `hint` as `structuredContent` carries it (some hosts hand the model nothing else):
/// how to continue when the list goes on, then how to narrow the question.
pub fn list_hint(next_cursor: Option<&str>, narrowing: Option<String>) -> Option<String> {
    let more = next_cursor.map(|_| {
        "More results: call again with the same arguments and `cursor` = next_cursor.".to_owned()
    });
    match (more, narrowing) {
        (Some(more), Some(narrowing)) => Some(format!("{more} {narrowing}")),
        (more, narrowing) => more.or(narrowing),
    }
}

/// The closing line of a result's text: its hint, when it has one.
pub fn hint_line(hint: Option<&str>) -> String {
    hint.map_or_else(String::new, |hint| format!("\n{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse_or_are_refused() {
        let check = |text: &str, minutes: Option<i64>| {
            assert_eq!(
                parse_duration(text, "since").ok().map(|d| d.num_minutes()),
                minutes,
                "{text}"
            );
        };
        check("30m", Some(30));
        check("6h", Some(360));
        check("7d", Some(7 * 1440));
        check("2w", Some(2 * 7 * 1440));
        check("0h", None);
        check("h", None);
        check("5y", None);
        check("-5m", None);
        check("99999999999999h", None);
        let absolute = parse_since("2026-01-05T12:00:00Z", "since").unwrap();
        assert_eq!(absolute.to_rfc3339(), "2026-01-05T12:00:00+00:00");
    }

    #[test]
    fn incident_references_parse_or_are_refused() {
        let check = |text: &str, expected: Option<IncidentReference>| {
            assert_eq!(IncidentReference::parse(text).ok(), expected, "{text}");
        };
        check("INC-42", Some(IncidentReference::Number(42)));
        check(" inc-7 ", Some(IncidentReference::Number(7)));
        check("#3", Some(IncidentReference::Number(3)));
        check("12", Some(IncidentReference::Number(12)));
        let id = Uuid::nil();
        check(&id.to_string(), Some(IncidentReference::Id(id)));
        check("INC-0", None);
        check("INC--1", None);
        check("INC-99999999999", None);
        check("yesterday's", None);
    }

    #[test]
    fn every_tool_is_listed_once_with_a_write_list_that_matches() {
        let names: Vec<String> = all_tools()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        for write in WRITE_TOOLS {
            assert!(
                names.iter().any(|name| name == write),
                "{write} missing from {names:?}"
            );
        }
    }
}
