//! What changed before an incident: the deployments of the window before it opened, ranked by how
//! much each moved its own service's error rate and p95 latency (mean of the 30 minutes after the
//! deploy against the 60 minutes before, in standard deviations of the before), and the anomaly
//! windows of the incident's services around it.
//!
//! The score is the larger of the two z-scores (only increases count, capped at 100), halved for a
//! service the incident does not name, plus 5 for one it does. A deploy that broke its service
//! therefore ranks first whatever else shipped that hour; a rolled-back status is reported but
//! does not count, so the ranking rests on the metrics alone.

use chrono::{DateTime, Duration, Utc};
use rmcp::schemars;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::anomalies::{AnomalyWindow, BUCKETS, ScanParameters, find_windows};
use super::within;
use crate::error::Error;
use crate::reader::{Reader, ScopedTransaction};

/// Minutes after a deployment over which its impact is measured.
const IMPACT_MINUTES: i32 = 30;
/// Minutes after the incident opened that the metric scan still covers.
const SCAN_AFTER_MINUTES: i64 = 30;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelateIncidentArguments {
    /// The incident: its reference (`INC-4`), its number (`4`) or its id.
    pub incident: String,
    /// How far before the incident opened to look for deployments, 15 to 1440 minutes (default 180).
    #[serde(default)]
    pub lookback_minutes: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrelationReport {
    pub incident: IncidentSummary,
    /// Deployments started in the window, most suspicious first.
    pub suspects: Vec<DeploymentSuspect>,
    /// Anomaly windows of the incident's services from the start of the window to 30 minutes after
    /// the incident opened, strongest first.
    pub metric_changes: Vec<AnomalyWindow>,
    pub conclusion: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct IncidentSummary {
    pub id: Uuid,
    pub reference: String,
    pub title: String,
    pub status: String,
    pub severity: String,
    pub opened_at: DateTime<Utc>,
    /// The services the incident names.
    pub services: Vec<String>,
    /// Where the search for deployments and metric changes starts.
    #[sqlx(skip)]
    pub window_start: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct DeploymentSuspect {
    pub deployment_id: Uuid,
    pub service: String,
    pub version: String,
    pub status: String,
    pub deployed_by: String,
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub minutes_before_incident: f64,
    /// Whether the incident names this deployment's service.
    pub on_affected_service: bool,
    pub error_rate_before: Option<f64>,
    pub error_rate_after: Option<f64>,
    pub error_rate_z: Option<f64>,
    pub latency_p95_ms_before: Option<f64>,
    pub latency_p95_ms_after: Option<f64>,
    pub latency_p95_ms_z: Option<f64>,
    pub score: f64,
    /// Minutes from this deployment to the first metric change of the incident's services, when
    /// that change came after it.
    #[sqlx(skip)]
    pub minutes_before_first_change: Option<f64>,
    #[sqlx(skip)]
    pub explanation: String,
}

/// $1 incident id, $2 lookback minutes, $3 impact minutes.
pub const RANK_DEPLOYMENTS: &str = "
WITH incident AS (
    SELECT i.id, i.opened_at FROM incidents i WHERE i.id = $1
),
affected AS (
    SELECT isv.service_id FROM incident_services isv WHERE isv.incident_id = $1
),
candidates AS (
    SELECT d.id, d.service_id, s.name AS service, d.version, d.status::text AS status, d.deployed_by,
           d.description, d.started_at, d.service_id IN (SELECT service_id FROM affected) AS on_affected_service,
           incident.opened_at
      FROM deployments d
      JOIN services s ON s.organization_id = d.organization_id AND s.id = d.service_id
     CROSS JOIN incident
     WHERE d.started_at >= incident.opened_at - make_interval(mins => $2)
       AND d.started_at <= incident.opened_at
),
impact AS (
    -- Per deployment and series, so each reads its own 90 minutes through the primary key
    -- (a join over all the samples would let the planner scan the whole table).
    SELECT c.id, ms.name AS metric, around.before_mean, around.before_stddev, around.after_mean
      FROM candidates c
      JOIN metric_series ms ON ms.service_id = c.service_id AND ms.name IN ('error_rate', 'latency_p95_ms')
     CROSS JOIN LATERAL (
         SELECT avg(sample.value) FILTER (WHERE sample.ts < c.started_at) AS before_mean,
                stddev_samp(sample.value) FILTER (WHERE sample.ts < c.started_at) AS before_stddev,
                avg(sample.value) FILTER (WHERE sample.ts >= c.started_at) AS after_mean
           FROM metric_samples sample
          WHERE sample.series_id = ms.id
            AND sample.ts >= c.started_at - interval '60 minutes'
            AND sample.ts < c.started_at + make_interval(mins => $3)
     ) around
),
measured AS (
    SELECT i.id, i.metric, i.before_mean, i.after_mean,
           (i.after_mean - i.before_mean) / greatest(i.before_stddev, 0.05 * abs(i.before_mean), 1e-6) AS z
      FROM impact i
)
SELECT c.id AS deployment_id, c.service, c.version, c.status, c.deployed_by, c.description, c.started_at,
       extract(epoch FROM c.opened_at - c.started_at)::float8 / 60 AS minutes_before_incident,
       c.on_affected_service,
       e.before_mean AS error_rate_before, e.after_mean AS error_rate_after, e.z AS error_rate_z,
       l.before_mean AS latency_p95_ms_before, l.after_mean AS latency_p95_ms_after, l.z AS latency_p95_ms_z,
       least(greatest(coalesce(e.z, 0), coalesce(l.z, 0), 0), 100)
         * CASE WHEN c.on_affected_service THEN 1.0 ELSE 0.5 END
         + CASE WHEN c.on_affected_service THEN 5 ELSE 0 END AS score
  FROM candidates c
  LEFT JOIN measured e ON e.id = c.id AND e.metric = 'error_rate'
  LEFT JOIN measured l ON l.id = c.id AND l.metric = 'latency_p95_ms'
 ORDER BY score DESC, c.started_at DESC
 LIMIT 20";

/// The `correlate_incident` tool; also returns the SQL it ran.
pub async fn correlate_incident(
    reader: &Reader,
    organization_id: Uuid,
    arguments: &CorrelateIncidentArguments,
) -> Result<(CorrelationReport, String), Error> {
    let lookback = within(
        "lookback_minutes",
        arguments.lookback_minutes.unwrap_or(180),
        15..=1440,
    )?;
    let mut transaction = reader.begin(organization_id).await?;
    let mut incident = find_incident(reader, &mut transaction, &arguments.incident).await?;
    let window_start = incident.opened_at - Duration::minutes(i64::from(lookback));
    incident.window_start = Some(window_start);

    let mut suspects: Vec<DeploymentSuspect> = sqlx::query_as(RANK_DEPLOYMENTS)
        .bind(incident.id)
        .bind(lookback as i32)
        .bind(IMPACT_MINUTES)
        .fetch_all(&mut *transaction)
        .await
        .map_err(|error| reader.failure(error))?;

    let affected: Vec<Uuid> =
        sqlx::query_scalar("SELECT service_id FROM incident_services WHERE incident_id = $1")
            .bind(incident.id)
            .fetch_all(&mut *transaction)
            .await
            .map_err(|error| reader.failure(error))?;
    let metric_changes = find_windows(
        reader,
        &mut transaction,
        &affected,
        None,
        window_start,
        incident.opened_at + Duration::minutes(SCAN_AFTER_MINUTES),
        ScanParameters::DEFAULT,
    )
    .await?;
    transaction.rollback().await?;

    let first_change = metric_changes.iter().map(|window| window.start).min();
    for suspect in &mut suspects {
        suspect.minutes_before_first_change = first_change
            .filter(|change| *change >= suspect.started_at)
            .map(|change| (change - suspect.started_at).num_seconds() as f64 / 60.0);
        suspect.explanation = explain(suspect);
    }
    let conclusion = conclude(&incident, &suspects, &metric_changes);
    let report = CorrelationReport {
        incident,
        suspects,
        metric_changes,
        conclusion,
    };
    Ok((report, format!("{RANK_DEPLOYMENTS};\n{BUCKETS}")))
}

/// The incident named by a reference (`INC-4`), a number or an id, in the caller's organisation.
pub(crate) async fn find_incident(
    reader: &Reader,
    transaction: &mut ScopedTransaction,
    reference: &str,
) -> Result<IncidentSummary, Error> {
    let reference = reference.trim();
    let by_id = Uuid::parse_str(reference).ok();
    let number = reference
        .trim_start_matches("INC-")
        .trim_start_matches("inc-")
        .parse::<i32>()
        .ok();
    if by_id.is_none() && number.is_none() {
        return Err(Error::InvalidArgument(format!(
            "incident must be a reference like INC-4, a number or an id, not {reference:?}"
        )));
    }
    let incident: Option<IncidentSummary> = sqlx::query_as(
        "SELECT i.id, 'INC-' || i.number AS reference, i.title, i.status::text AS status,
                i.severity::text AS severity, i.opened_at,
                coalesce((SELECT array_agg(s.name ORDER BY s.name)
                            FROM incident_services isv
                            JOIN services s ON s.organization_id = isv.organization_id AND s.id = isv.service_id
                           WHERE isv.incident_id = i.id), '{}') AS services
           FROM incidents i
          WHERE ($1::uuid IS NOT NULL AND i.id = $1) OR ($1::uuid IS NULL AND i.number = $2)",
    )
    .bind(by_id)
    .bind(number)
    .fetch_optional(&mut **transaction)
    .await
    .map_err(|error| reader.failure(error))?;
    incident.ok_or_else(|| Error::NotFound(format!("no incident {reference} in your organisation")))
}

fn explain(suspect: &DeploymentSuspect) -> String {
    let mut text = format!(
        "{} {} ({}) started {:.0} min before the incident opened",
        suspect.service, suspect.version, suspect.status, suspect.minutes_before_incident
    );
    if let Some(minutes) = suspect.minutes_before_first_change {
        text.push_str(&format!(
            ", {minutes:.0} min before the first metric change"
        ));
    }
    match (suspect.error_rate_before, suspect.error_rate_after, suspect.error_rate_z) {
        (Some(before), Some(after), Some(z)) => text.push_str(&format!(
            "; in the {IMPACT_MINUTES} min after it, error_rate went from {before:.4} to {after:.4} (z {z:.1})"
        )),
        _ => text.push_str("; no error_rate samples around it"),
    }
    if let (Some(before), Some(after), Some(z)) = (
        suspect.latency_p95_ms_before,
        suspect.latency_p95_ms_after,
        suspect.latency_p95_ms_z,
    ) {
        text.push_str(&format!(
            " and latency_p95_ms from {before:.0} to {after:.0} ms (z {z:.1})"
        ));
    }
    text.push('.');
    text
}

fn conclude(
    incident: &IncidentSummary,
    suspects: &[DeploymentSuspect],
    changes: &[AnomalyWindow],
) -> String {
    let impact_of = |suspect: &DeploymentSuspect| {
        suspect
            .error_rate_z
            .unwrap_or_default()
            .max(suspect.latency_p95_ms_z.unwrap_or_default())
    };
    match suspects.first() {
        Some(top) if impact_of(top) >= 6.0 => format!(
            "{}'s most likely trigger is the deployment of {} {} at {}: {}",
            incident.reference, top.service, top.version, top.started_at, top.explanation
        ),
        Some(_) => format!(
            "No deployment in the window visibly moved its service's error rate or latency; {} metric change(s) \
             were found on the incident's services.",
            changes.len()
        ),
        None => format!(
            "No deployment started in the window before {} opened; {} metric change(s) were found on its services.",
            incident.reference,
            changes.len()
        ),
    }
}
