//! Error-budget burn of a service against an availability objective, from the raw per-minute
//! samples: each minute's failed requests are its error_rate times its request_rate times 60, so
//! busy minutes weigh more than quiet ones.
//!
//! The burn rate is the error ratio divided by the budget (1 - objective): 1 spends the budget
//! exactly over the window, 14.4 over the last hour is the classic "page now" signal of
//! multi-window burn-rate alerting.

use chrono::{DateTime, Duration, Utc};
use rmcp::schemars;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{find_service, latest_sample, within};
use crate::error::Error;
use crate::reader::Reader;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SloBurnArguments {
    /// The service's name, e.g. `checkout-api`.
    pub service: String,
    /// The availability objective in percent of requests that succeed, e.g. 99.5 (default).
    #[serde(default)]
    pub objective_percent: Option<f64>,
    /// The SLO window in hours, 1 to 720 (default 24).
    #[serde(default)]
    pub window_hours: Option<u32>,
    /// The end of the window (exclusive), RFC 3339. Default: just after the service's latest sample.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SloBurnReport {
    pub service: String,
    pub objective_percent: f64,
    /// 1 - objective, as a ratio of requests.
    pub error_budget_ratio: f64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub requests: f64,
    pub failed_requests: f64,
    /// Failed requests / requests over the window.
    pub error_ratio: f64,
    /// error_ratio / error_budget_ratio: above 1, the budget of the window is overspent.
    pub burn_rate: f64,
    pub budget_consumed_percent: f64,
    pub budget_remaining_percent: f64,
    pub burn_rate_last_hour: Option<f64>,
    pub burn_rate_last_6_hours: Option<f64>,
    /// The hours that burned fastest.
    pub worst_hours: Vec<HourlyBurn>,
    /// One sentence for people.
    pub assessment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct HourlyBurn {
    pub hour: DateTime<Utc>,
    pub requests: f64,
    pub failed_requests: f64,
    pub burn_rate: f64,
}

/// $1 service id, $2 since, $3 until. One row per minute with both samples.
const MINUTES: &str = "
WITH series AS (
    SELECT max(ms.id) FILTER (WHERE ms.name = 'error_rate') AS errors,
           max(ms.id) FILTER (WHERE ms.name = 'request_rate') AS traffic
      FROM metric_series ms
     WHERE ms.service_id = $1
),
minutes AS (
    SELECT e.ts, r.value * 60 AS requests, r.value * 60 * e.value AS failed
      FROM series
      JOIN metric_samples e ON e.series_id = series.errors AND e.ts >= $2 AND e.ts < $3
      JOIN metric_samples r ON r.series_id = series.traffic AND r.ts = e.ts
)";

/// $4 objective budget ratio.
const TOTALS: &str = "
SELECT coalesce(sum(requests), 0) AS requests,
       coalesce(sum(failed), 0) AS failed,
       sum(failed) FILTER (WHERE ts >= $3 - interval '1 hour') / nullif(sum(requests) FILTER (WHERE ts >= $3 - interval '1 hour'), 0) / $4 AS burn_last_hour,
       sum(failed) FILTER (WHERE ts >= $3 - interval '6 hours') / nullif(sum(requests) FILTER (WHERE ts >= $3 - interval '6 hours'), 0) / $4 AS burn_last_6_hours
  FROM minutes";

const WORST_HOURS: &str = "
SELECT date_trunc('hour', ts) AS hour, sum(requests) AS requests, sum(failed) AS failed_requests,
       sum(failed) / nullif(sum(requests), 0) / $4 AS burn_rate
  FROM minutes
 GROUP BY 1
HAVING sum(requests) > 0
 ORDER BY burn_rate DESC, hour
 LIMIT 5";

/// The `slo_burn` tool; also returns the SQL it ran.
pub async fn slo_burn(
    reader: &Reader,
    organization_id: Uuid,
    arguments: &SloBurnArguments,
) -> Result<(SloBurnReport, String), Error> {
    let objective_percent = arguments.objective_percent.unwrap_or(99.5);
    if !(objective_percent > 0.0 && objective_percent < 100.0) {
        return Err(Error::InvalidArgument(format!(
            "objective_percent must be above 0 and below 100, e.g. 99.5, not {objective_percent}"
        )));
    }
    let budget = 1.0 - objective_percent / 100.0;
    let window_hours = within(
        "window_hours",
        arguments.window_hours.unwrap_or(24),
        1..=720,
    )?;

    let mut transaction = reader.begin(organization_id).await?;
    let service = find_service(reader, &mut transaction, &arguments.service).await?;
    let until = match arguments.until {
        Some(until) => until,
        None => latest_sample(reader, &mut transaction, service.id)
            .await?
            .map_or_else(Utc::now, |latest| latest + Duration::minutes(1)),
    };
    let since = until - Duration::hours(i64::from(window_hours));

    let totals_sql = format!("{MINUTES}{TOTALS}");
    let (requests, failed, burn_last_hour, burn_last_6_hours): (
        f64,
        f64,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(&totals_sql)
        .bind(service.id)
        .bind(since)
        .bind(until)
        .bind(budget)
        .fetch_one(&mut *transaction)
        .await
        .map_err(|error| reader.failure(error))?;
    let worst_sql = format!("{MINUTES}{WORST_HOURS}");
    let worst_hours: Vec<HourlyBurn> = sqlx::query_as(&worst_sql)
        .bind(service.id)
        .bind(since)
        .bind(until)
        .bind(budget)
        .fetch_all(&mut *transaction)
        .await
        .map_err(|error| reader.failure(error))?;
    transaction.rollback().await?;

    if requests <= 0.0 {
        return Err(Error::NotFound(format!(
            "{} has no traffic samples between {since} and {until}; pass `until` within its data",
            service.name
        )));
    }
    let error_ratio = failed / requests;
    let burn_rate = error_ratio / budget;
    let assessment = match burn_rate {
        rate if rate > 1.0 => format!(
            "{} overspent its {window_hours}-hour error budget: {:.0}% of it is gone ({:.2}x the sustainable rate).",
            service.name,
            rate * 100.0,
            rate
        ),
        rate => format!(
            "{} is within its {window_hours}-hour error budget: {:.0}% of it used ({:.2}x the sustainable rate).",
            service.name,
            rate * 100.0,
            rate
        ),
    };
    let report = SloBurnReport {
        service: service.name,
        objective_percent,
        error_budget_ratio: budget,
        since,
        until,
        requests,
        failed_requests: failed,
        error_ratio,
        burn_rate,
        budget_consumed_percent: burn_rate * 100.0,
        budget_remaining_percent: (1.0 - burn_rate) * 100.0,
        burn_rate_last_hour: burn_last_hour,
        burn_rate_last_6_hours: burn_last_6_hours,
        worst_hours,
        assessment,
    };
    Ok((report, format!("{totals_sql};\n{worst_sql}")))
}
