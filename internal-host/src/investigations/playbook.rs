//! The playbook: the fixed steps every investigation takes, with no model. Each is one MCP call
//! to internal-mcp, recorded as a step (fenced by the lease) before its result is used, and parsed
//! into the few fields the report needs. A tool error is recorded and leaves a gap in the
//! findings; a transport failure ends the attempt (it is retried later).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::store::{self, ClaimedInvestigation, StepRecord};
use crate::error::Error;
use crate::mcp::{McpSession, ToolOutcome};

/// What internal-mcp's admission control says when a caller has too many calls in flight.
const ADMISSION_REFUSAL: &str = "too many queries in flight";
/// The waits before asking again after such a refusal.
const ADMISSION_RETRIES_MS: [u64; 6] = [100, 200, 400, 800, 1_600, 3_200];

/// Why an attempt stopped before its end.
#[derive(Debug)]
pub(crate) enum RunError {
    /// internal-mcp or the host's database failed: retry later.
    Retryable(String),
    /// Retrying cannot help (the incident is gone, the service user is refused).
    Permanent(String),
    /// Another worker holds the investigation now: stop quietly.
    LeaseLost,
}

impl From<Error> for RunError {
    fn from(error: Error) -> Self {
        RunError::Retryable(error.to_string())
    }
}

/// One recorded call and its outcome.
#[derive(Debug)]
pub(crate) struct Step {
    pub id: i64,
    pub outcome: ToolOutcome,
}

/// Records every call of one attempt.
pub(crate) struct Recorder<'a> {
    pub pool: &'a PgPool,
    pub investigation: &'a ClaimedInvestigation,
    pub worker_id: &'a str,
    pub pause: Duration,
}

/// A call made, before it is recorded.
struct Called {
    status: &'static str,
    summary: String,
    result: Option<Value>,
    outcome: Option<ToolOutcome>,
    duration: Duration,
}

impl Recorder<'_> {
    /// Calls `tool` on `session` and records the call as step `name`.
    pub(crate) async fn call(
        &self,
        session: &McpSession,
        name: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<Step, RunError> {
        let called = self.invoke(session, tool, &arguments).await;
        self.record(self.pool, name, tool, &arguments, called).await
    }

    /// Like [`Recorder::call`], recording on `connection` (the transaction holding the row lock).
    pub(crate) async fn call_locked(
        &self,
        connection: &mut sqlx::PgConnection,
        session: &McpSession,
        name: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<Step, RunError> {
        let called = self.invoke(session, tool, &arguments).await;
        self.record(connection, name, tool, &arguments, called)
            .await
    }

    async fn invoke(&self, session: &McpSession, tool: &str, arguments: &Value) -> Called {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        let map: Map<String, Value> = match arguments {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        let started = Instant::now();
        let mut called = session.call(tool, map.clone()).await;
        // internal-mcp refuses a call over its per-user limit of calls in flight (several workers
        // share the service user): wait a little and ask again, a bounded number of times.
        for wait_ms in ADMISSION_RETRIES_MS {
            match &called {
                Ok(outcome) if outcome.is_error && outcome.text.contains(ADMISSION_REFUSAL) => {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    called = session.call(tool, map.clone()).await;
                }
                _ => break,
            }
        }
        let duration = started.elapsed();
        match called {
            Ok(outcome) if outcome.is_error => Called {
                status: "tool_error",
                summary: cap(&outcome.text, 600),
                result: None,
                outcome: Some(outcome),
                duration,
            },
            Ok(outcome) => Called {
                status: "ok",
                summary: summarize(tool, outcome.structured.as_ref(), &outcome.text),
                result: outcome.structured.clone().map(redact),
                outcome: Some(outcome),
                duration,
            },
            Err(error) => Called {
                status: "transport_error",
                summary: cap(&error.to_string(), 600),
                result: None,
                outcome: None,
                duration,
            },
        }
    }

    async fn record(
        &self,
        executor: impl sqlx::PgExecutor<'_>,
        name: &str,
        tool: &str,
        arguments: &Value,
        called: Called,
    ) -> Result<Step, RunError> {
        let recorded = store::record_step(
            executor,
            self.investigation.id,
            self.worker_id,
            &StepRecord {
                attempt: self.investigation.attempts,
                name,
                tool,
                arguments: &redact(arguments.clone()),
                status: called.status,
                summary: &called.summary,
                result: called.result.as_ref(),
                duration: called.duration,
            },
        )
        .await?;
        let Some(id) = recorded else {
            return Err(RunError::LeaseLost);
        };
        match called.outcome {
            Some(outcome) => Ok(Step { id, outcome }),
            None => Err(RunError::Retryable(format!("{tool}: {}", called.summary))),
        }
    }
}

/// What the playbook found, each piece with the step it came from.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub incident: Option<(i64, IncidentDetail)>,
    pub anomalies: Vec<(i64, AnomalyReport)>,
    pub correlation: Option<(i64, Correlation)>,
    pub alerts: Option<(i64, IncidentAlerts)>,
    pub slo: Vec<(i64, SloBurn)>,
    /// Steps that answered with a tool error: (step id, tool, message).
    pub gaps: Vec<(i64, String, String)>,
    /// Every step id of the run, for the report's citation check.
    pub step_ids: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IncidentSummary {
    pub reference: String,
    pub title: String,
    pub status: String,
    pub severity: String,
    pub opened_at: DateTime<Utc>,
    #[serde(default)]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IncidentDetail {
    pub incident: IncidentSummary,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TimelineEntry {
    pub id: Uuid,
    pub kind: String,
    pub author_id: Option<Uuid>,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AnomalyReport {
    #[serde(default)]
    pub windows: Vec<AnomalyWindow>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AnomalyWindow {
    pub service: String,
    pub metric: String,
    pub direction: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub peak_z: f64,
    pub peak_value: f64,
    pub baseline: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Correlation {
    #[serde(default)]
    pub suspects: Vec<Suspect>,
    #[serde(default)]
    pub metric_changes: Vec<AnomalyWindow>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Suspect {
    pub deployment_id: Uuid,
    pub service: String,
    pub version: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub minutes_before_incident: f64,
    pub on_affected_service: bool,
    pub error_rate_before: Option<f64>,
    pub error_rate_after: Option<f64>,
    pub error_rate_z: Option<f64>,
    pub latency_p95_ms_z: Option<f64>,
    pub score: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IncidentAlerts {
    #[serde(default)]
    pub alerts: Vec<RelatedAlert>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RelatedAlert {
    pub service: String,
    pub monitor: String,
    pub metric: String,
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub linked: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SloBurn {
    pub service: String,
    pub objective_percent: f64,
    pub burn_rate: f64,
    pub budget_consumed_percent: f64,
    pub burn_rate_last_hour: Option<f64>,
}

/// Runs the playbook for `investigation` on `session` (a viewer session of the service user).
pub(crate) async fn run(
    recorder: &Recorder<'_>,
    session: &McpSession,
    max_services: usize,
) -> Result<Findings, RunError> {
    let mut findings = Findings::default();
    let incident_id = recorder.investigation.incident_id.to_string();

    let step = recorder
        .call(
            session,
            "incident",
            "get_incident",
            json!({"incident": incident_id}),
        )
        .await?;
    findings.step_ids.push(step.id);
    let detail: IncidentDetail = match parse(&step) {
        Ok(detail) => detail,
        Err(message) => {
            return Err(RunError::Permanent(format!(
                "the incident could not be read: {message}"
            )));
        }
    };
    let opened_at = detail.incident.opened_at;
    let services: Vec<String> = detail
        .incident
        .services
        .iter()
        .take(max_services)
        .cloned()
        .collect();
    findings.incident = Some((step.id, detail));

    let since = opened_at - chrono::Duration::hours(3);
    let until = opened_at + chrono::Duration::minutes(30);
    for service in &services {
        let step = recorder
            .call(
                session,
                &format!("anomalies:{service}"),
                "detect_anomalies",
                json!({"service": service, "since": since.to_rfc3339(), "until": until.to_rfc3339(), "limit": 10}),
            )
            .await?;
        findings.step_ids.push(step.id);
        match parse::<AnomalyReport>(&step) {
            Ok(report) => findings.anomalies.push((step.id, report)),
            Err(message) => findings
                .gaps
                .push((step.id, "detect_anomalies".into(), message)),
        }
    }

    let step = recorder
        .call(
            session,
            "deployments",
            "correlate_incident",
            json!({"incident": incident_id}),
        )
        .await?;
    findings.step_ids.push(step.id);
    match parse::<Correlation>(&step) {
        Ok(correlation) => findings.correlation = Some((step.id, correlation)),
        Err(message) => findings
            .gaps
            .push((step.id, "correlate_incident".into(), message)),
    }

    if let Some((service, metric)) = key_metric(&findings, &services) {
        // The key metric around the incident, in 5-minute buckets: what the page draws.
        let step = recorder
            .call(
                session,
                CHART_STEP,
                "run_select",
                json!({"sql": key_metric_sql(&service, &metric, since, until)}),
            )
            .await?;
        findings.step_ids.push(step.id);
    }

    let step = recorder
        .call(
            session,
            "alerts",
            "incident_alerts",
            json!({"incident": incident_id}),
        )
        .await?;
    findings.step_ids.push(step.id);
    match parse::<IncidentAlerts>(&step) {
        Ok(alerts) => findings.alerts = Some((step.id, alerts)),
        Err(message) => findings
            .gaps
            .push((step.id, "incident_alerts".into(), message)),
    }

    for service in &services {
        let step = recorder
            .call(
                session,
                &format!("slo_burn:{service}"),
                "slo_burn",
                json!({"service": service, "window_hours": 24, "until": until.to_rfc3339()}),
            )
            .await?;
        findings.step_ids.push(step.id);
        match parse::<SloBurn>(&step) {
            Ok(burn) => findings.slo.push((step.id, burn)),
            Err(message) => findings.gaps.push((step.id, "slo_burn".into(), message)),
        }
    }
    Ok(findings)
}

/// The name of the step whose result is the chart of the key metric.
pub const CHART_STEP: &str = "key_metric";

/// The metric to draw: the strongest change the correlation saw, else the strongest anomaly
/// window, else the error rate of the incident's first service.
fn key_metric(findings: &Findings, services: &[String]) -> Option<(String, String)> {
    let strongest = |windows: &mut dyn Iterator<Item = &AnomalyWindow>| {
        windows
            .max_by(|a, b| a.peak_z.abs().total_cmp(&b.peak_z.abs()))
            .map(|window| (window.service.clone(), window.metric.clone()))
    };
    findings
        .correlation
        .as_ref()
        .and_then(|(_, correlation)| strongest(&mut correlation.metric_changes.iter()))
        .or_else(|| {
            strongest(
                &mut findings
                    .anomalies
                    .iter()
                    .flat_map(|(_, report)| report.windows.iter()),
            )
        })
        .or_else(|| {
            services
                .first()
                .map(|service| (service.clone(), "error_rate".to_owned()))
        })
}

/// A `run_select` for `metric` of `service` between `since` and `until`, averaged per 5 minutes.
/// The names are written as SQL literals (quotes doubled); the reader's row-level security keeps
/// the query to the organisation whatever they hold.
fn key_metric_sql(
    service: &str,
    metric: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> String {
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    format!(
        "SELECT date_bin('5 minutes', s.ts, TIMESTAMPTZ '2000-01-01') AS at, avg(s.value) AS {column}\n\
         FROM metric_samples s\n\
         JOIN metric_series m ON m.id = s.series_id\n\
         JOIN services v ON v.id = m.service_id\n\
         WHERE v.name = {service} AND m.name = {metric}\n\
           AND s.ts >= {since} AND s.ts < {until}\n\
         GROUP BY 1 ORDER BY 1",
        column = chart_column(metric),
        service = literal(service),
        metric = literal(metric),
        since = literal(&since.to_rfc3339()),
        until = literal(&until.to_rfc3339()),
    )
}

/// `metric` as a column alias: metric names are `[a-z][a-z0-9_]*`, anything else is `value`.
fn chart_column(metric: &str) -> &str {
    let plain = metric.len() <= 63
        && metric.starts_with(|first: char| first.is_ascii_lowercase())
        && metric.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '_'
        });
    if plain { metric } else { "value" }
}

/// The structured result of a successful step, or why there is none.
pub(crate) fn parse<T: DeserializeOwned>(step: &Step) -> Result<T, String> {
    if step.outcome.is_error {
        return Err(cap(&step.outcome.text, 300));
    }
    let value = match &step.outcome.structured {
        Some(value) => value.clone(),
        None => serde_json::from_str(&step.outcome.text)
            .map_err(|error| format!("the result is not JSON: {error}"))?,
    };
    serde_json::from_value(value).map_err(|error| format!("unexpected result shape: {error}"))
}

/// A value with every `confirmation_token` field removed (tokens are never stored).
pub(crate) fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| !key.contains("confirmation_token"))
                .map(|(key, value)| (key, redact(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

/// One line for the trace: what the step found.
fn summarize(tool: &str, structured: Option<&Value>, text: &str) -> String {
    let Some(value) = structured else {
        return cap(text, 300);
    };
    let count = |field: &str| value[field].as_array().map_or(0, Vec::len);
    match tool {
        "get_incident" => format!(
            "{}: {} ({}, {}), {} timeline entries",
            value["incident"]["reference"].as_str().unwrap_or("?"),
            cap(value["incident"]["title"].as_str().unwrap_or(""), 120),
            value["incident"]["status"].as_str().unwrap_or("?"),
            value["incident"]["severity"].as_str().unwrap_or("?"),
            count("timeline")
        ),
        "detect_anomalies" => format!(
            "{} anomaly window(s) on {}",
            count("windows"),
            value["service"].as_str().unwrap_or("?")
        ),
        "correlate_incident" => cap(value["conclusion"].as_str().unwrap_or(""), 500),
        "incident_alerts" => format!("{} alert(s) around the incident", count("alerts")),
        "slo_burn" => cap(value["assessment"].as_str().unwrap_or(""), 300),
        "annotate_incident" => format!("status {}", value["status"].as_str().unwrap_or("?")),
        _ => cap(text, 300),
    }
}

/// `text` cut to `max` characters.
pub(crate) fn cap(text: &str, max: usize) -> String {
    crate::mcp::cap_text(text, max).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_metric_query_quotes_what_it_is_given() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sql = key_metric_sql("checkout-api", "error_rate", at, at);
        assert!(sql.contains("AS error_rate"), "{sql}");
        assert!(sql.contains("v.name = 'checkout-api'"), "{sql}");
        let hostile = key_metric_sql("x' OR true --", "a; DROP TABLE x", at, at);
        assert!(hostile.contains("v.name = 'x'' OR true --'"), "{hostile}");
        assert!(hostile.contains("AS value"), "{hostile}");
    }
}
