//! Alert rules ranked by noise: how many alerts each monitor raised in a window, how many of them
//! resolved by themselves within minutes, and how few led anywhere (acknowledged, linked to an
//! incident). The top of the list is where tuning a threshold or `for_minutes` pays most.

use chrono::{DateTime, Duration, Utc};
use rmcp::schemars;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::within;
use crate::error::Error;
use crate::reader::Reader;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoisyAlertRulesArguments {
    /// Start of the window (alerts that started at or after it), RFC 3339. Default: 7 days before `until`.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// End of the window (exclusive), RFC 3339. Default: now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Alerts resolved within this many minutes count as short-lived, 1 to 1440 (default 10).
    #[serde(default)]
    pub short_lived_minutes: Option<u32>,
    /// At most this many rules, noisiest first, 1 to 100 (default 10).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoisyAlertRulesReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Noisiest first: by alerts, then short-lived alerts.
    pub rules: Vec<NoisyRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct NoisyRule {
    pub monitor_id: Uuid,
    pub monitor: String,
    pub service: String,
    pub metric: String,
    pub comparison: String,
    pub threshold: f64,
    pub for_minutes: i32,
    pub severity: String,
    pub enabled: bool,
    pub silenced_until: Option<DateTime<Utc>>,
    pub alerts: i64,
    /// Resolved within `short_lived_minutes` of firing.
    pub short_lived: i64,
    pub acknowledged: i64,
    pub linked_to_incidents: i64,
    /// Median minutes an alert kept firing (still-firing alerts count up to `until`).
    pub median_minutes_firing: Option<f64>,
}

/// $1 since, $2 until, $3 short-lived minutes, $4 limit.
pub(crate) const NOISY_RULES: &str = "
SELECT m.id AS monitor_id, m.name AS monitor, s.name AS service, m.metric, m.comparison::text AS comparison,
       m.threshold, m.for_minutes, m.severity::text AS severity, m.enabled, m.silenced_until,
       count(*) AS alerts,
       count(*) FILTER (WHERE a.resolved_at IS NOT NULL
                          AND a.resolved_at - a.started_at < make_interval(mins => $3)) AS short_lived,
       count(*) FILTER (WHERE a.acknowledged_at IS NOT NULL) AS acknowledged,
       count(*) FILTER (WHERE a.incident_id IS NOT NULL) AS linked_to_incidents,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM least(coalesce(a.resolved_at, $2), $2) - a.started_at)::float8 / 60
       ) AS median_minutes_firing
  FROM alerts a
  JOIN monitors m ON m.organization_id = a.organization_id AND m.id = a.monitor_id
  JOIN services s ON s.organization_id = m.organization_id AND s.id = m.service_id
 WHERE a.started_at >= $1 AND a.started_at < $2
 GROUP BY m.id, s.name
 ORDER BY alerts DESC, short_lived DESC, m.name
 LIMIT $4";

/// The `noisy_alert_rules` tool.
pub async fn noisy_alert_rules(
    reader: &Reader,
    organization_id: Uuid,
    arguments: &NoisyAlertRulesArguments,
) -> Result<NoisyAlertRulesReport, Error> {
    let until = arguments.until.unwrap_or_else(Utc::now);
    let since = arguments.since.unwrap_or(until - Duration::days(7));
    if since >= until {
        return Err(Error::InvalidArgument("since must be before until".into()));
    }
    if until - since > Duration::days(366) {
        return Err(Error::InvalidArgument(
            "the window may cover at most 366 days".into(),
        ));
    }
    let short_lived_minutes = within(
        "short_lived_minutes",
        arguments.short_lived_minutes.unwrap_or(10),
        1..=1440,
    )?;
    let limit = within("limit", arguments.limit.unwrap_or(10), 1..=100)?;
    let mut transaction = reader.begin(organization_id).await?;
    let rules: Vec<NoisyRule> = sqlx::query_as(NOISY_RULES)
        .bind(since)
        .bind(until)
        .bind(short_lived_minutes as i32)
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await
        .map_err(|error| reader.failure(error))?;
    transaction.rollback().await?;
    Ok(NoisyAlertRulesReport {
        since,
        until,
        rules,
    })
}
