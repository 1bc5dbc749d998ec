//! Analytics that only raw access makes cheap, computed in SQL over the raw per-minute samples, on
//! the reader connection under row-level security like the caller's own SQL.
//!
//! - `anomalies`: windows where a service's metrics left their trailing baseline (robust z-scores).
//! - `correlation`: deployments and metric changes in the window before an incident, ranked.
//! - `slo`: error-budget burn of a service against an availability objective.
//! - `noisy`: alert rules ranked by how often they fire and how short-lived their alerts are.

pub mod anomalies;
pub mod correlation;
pub mod noisy;
mod scan;
pub mod slo;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Error;
use crate::reader::{Reader, ScopedTransaction};

/// A service found by name in the caller's organisation.
#[derive(Debug, Clone)]
pub(crate) struct ServiceReference {
    pub id: Uuid,
    pub name: String,
}

/// The metrics every service reports.
pub(crate) const METRICS: [&str; 5] = [
    "latency_p50_ms",
    "latency_p95_ms",
    "error_rate",
    "request_rate",
    "cpu_utilization",
];

/// The service called `name`, or a not-found error listing near names.
pub(crate) async fn find_service(
    reader: &Reader,
    transaction: &mut ScopedTransaction,
    name: &str,
) -> Result<ServiceReference, Error> {
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM services WHERE name = $1")
            .bind(name.trim())
            .fetch_optional(&mut **transaction)
            .await
            .map_err(|error| reader.failure(error))?;
    if let Some((id, name)) = found {
        return Ok(ServiceReference { id, name });
    }
    let similar: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM services
          WHERE strpos(name, lower($1)) > 0 OR strpos(lower($1), name) > 0
          ORDER BY name LIMIT 5",
    )
    .bind(name.trim())
    .fetch_all(&mut **transaction)
    .await
    .map_err(|error| reader.failure(error))?;
    let suggestion = if similar.is_empty() {
        "list the services with run_select: SELECT name FROM services ORDER BY name".to_owned()
    } else {
        format!("did you mean {}?", similar.join(", "))
    };
    Err(Error::NotFound(format!(
        "no service named {name:?} in your organisation; {suggestion}"
    )))
}

/// The time of the service's latest sample, found backwards along each series' primary key.
pub(crate) async fn latest_sample(
    reader: &Reader,
    transaction: &mut ScopedTransaction,
    service_id: Uuid,
) -> Result<Option<DateTime<Utc>>, Error> {
    sqlx::query_scalar(
        "SELECT max(latest.ts)
           FROM metric_series ms
          CROSS JOIN LATERAL (
              SELECT sample.ts FROM metric_samples sample
               WHERE sample.series_id = ms.id ORDER BY sample.ts DESC LIMIT 1
          ) latest
          WHERE ms.service_id = $1",
    )
    .bind(service_id)
    .fetch_one(&mut **transaction)
    .await
    .map_err(|error| reader.failure(error))
}

/// Checks a metric name against the five every service has.
pub(crate) fn check_metric(metric: Option<&str>) -> Result<Option<String>, Error> {
    match metric.map(str::trim) {
        None | Some("") => Ok(None),
        Some(metric) if METRICS.contains(&metric) => Ok(Some(metric.to_owned())),
        Some(other) => Err(Error::InvalidArgument(format!(
            "metric {other:?} is not one of {}",
            METRICS.join(", ")
        ))),
    }
}

/// `value` when within `range`, else an error naming `field`.
pub(crate) fn within<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, Error> {
    if range.contains(&value) {
        return Ok(value);
    }
    Err(Error::InvalidArgument(format!(
        "{field} must be between {} and {}, not {value}",
        range.start(),
        range.end()
    )))
}
