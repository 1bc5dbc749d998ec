//! Metric series and their samples: listing, range queries aggregated in SQL, and raw pages.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::page::{Page, PageRequest, time_key};
use crate::domain::{DomainError, Tenant};

/// The most points one range query returns; a week at one-minute resolution fits.
pub const MAX_POINTS: i64 = 11_000;
/// The longest time range one query may cover.
pub const MAX_RANGE_DAYS: i64 = 90;

/// One metric of a service, with its latest value.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct MetricSeries {
    /// e.g. `error_rate`, `latency_p95_ms`.
    pub name: String,
    /// `ms`, `ratio` (0..1), `rps` (requests per second).
    pub unit: String,
    pub description: String,
    pub latest_value: Option<f64>,
    pub latest_at: Option<DateTime<Utc>>,
}

/// How samples falling into one step are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    #[default]
    Avg,
    Min,
    Max,
    /// The 95th percentile of the samples in the step (continuous interpolation).
    P95,
}

impl Aggregation {
    /// A fixed SQL expression per variant: nothing from the client reaches the SQL text.
    fn sql(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg(value)",
            Aggregation::Min => "min(value)",
            Aggregation::Max => "max(value)",
            Aggregation::P95 => "percentile_cont(0.95) WITHIN GROUP (ORDER BY value)",
        }
    }
}

/// A validated range query.
#[derive(Debug, Clone, Copy)]
pub struct RangeQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step: Duration,
    pub aggregation: Aggregation,
}

impl RangeQuery {
    /// Checks the window and the number of points it would produce.
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
        aggregation: Aggregation,
    ) -> Result<Self, DomainError> {
        if from >= to {
            return Err(DomainError::invalid("from", "must be before `to`"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(DomainError::invalid(
                "from",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
        if step < Duration::seconds(60) {
            return Err(DomainError::invalid(
                "step",
                "must be at least 60 seconds (samples are per minute)",
            ));
        }
        let points = (to - from).num_seconds() / step.num_seconds();
        if points > MAX_POINTS {
            return Err(DomainError::invalid(
                "step",
                format!(
                    "the range would yield {points} points; the most is {MAX_POINTS}: use a larger step"
                ),
            ));
        }
        Ok(Self {
            from,
            to,
            step,
            aggregation,
        })
    }
}

/// One aggregated point: the step starting at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// One raw sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub value: f64,
}

impl Tenant {
    /// The metric series of a service.
    pub async fn metric_series(&self, service_id: Uuid) -> Result<Vec<MetricSeries>, DomainError> {
        self.ensure_services_exist(&[service_id]).await?;
        let series = sqlx::query_as(
            "SELECT ms.name, ms.unit, ms.description, latest.value AS latest_value, latest.ts AS latest_at
               FROM metric_series ms
               LEFT JOIN LATERAL (
                   SELECT value, ts FROM metric_samples WHERE series_id = ms.id ORDER BY ts DESC LIMIT 1
               ) latest ON true
              WHERE ms.organization_id = $1 AND ms.service_id = $2
              ORDER BY ms.name",
        )
        .bind(self.organization_id())
        .bind(service_id)
        .fetch_all(&self.db)
        .await?;
        Ok(series)
    }

    /// Aggregated points of one metric of a service, one per step that has samples.
    pub async fn metric_range(
        &self,
        service_id: Uuid,
        metric: &str,
        query: RangeQuery,
    ) -> Result<Vec<Point>, DomainError> {
        let series_id = self.series_id(service_id, metric).await?;
        let points = sqlx::query_as(&format!(
            "SELECT date_bin(make_interval(secs => $2), ts, $3) AS at, {} AS value
               FROM metric_samples
              WHERE series_id = $1 AND ts >= $3 AND ts < $4
              GROUP BY 1
              ORDER BY 1",
            query.aggregation.sql()
        ))
        .bind(series_id)
        .bind(query.step.num_seconds() as f64)
        .bind(query.from)
        .bind(query.to)
        .fetch_all(&self.db)
        .await?;
        Ok(points)
    }

    /// Raw samples of one metric in `[from, to)`, oldest first.
    pub async fn metric_samples(
        &self,
        service_id: Uuid,
        metric: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page: &PageRequest,
    ) -> Result<Page<Sample>, DomainError> {
        if from >= to {
            return Err(DomainError::invalid("from", "must be before `to`"));
        }
        let series_id = self.series_id(service_id, metric).await?;
        let after = page.after_time()?;
        let rows: Vec<Sample> = sqlx::query_as(
            "SELECT ts AS at, value FROM metric_samples
              WHERE series_id = $1 AND ts >= $2 AND ts < $3 AND ($4::timestamptz IS NULL OR ts > $4)
              ORDER BY ts
              LIMIT $5",
        )
        .bind(series_id)
        .bind(from)
        .bind(to)
        .bind(after)
        .bind(page.fetch_limit())
        .fetch_all(&self.db)
        .await?;
        Ok(page.finish(rows, |sample| time_key(sample.at)))
    }

    async fn series_id(&self, service_id: Uuid, metric: &str) -> Result<i64, DomainError> {
        self.ensure_services_exist(&[service_id]).await?;
        sqlx::query_scalar(
            "SELECT id FROM metric_series WHERE organization_id = $1 AND service_id = $2 AND name = $3",
        )
        .bind(self.organization_id())
        .bind(service_id)
        .bind(metric)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("the service has no metric named {metric}")))
    }
}

/// Parses a step such as `60s`, `5m`, `1h` or `1d`.
pub fn parse_step(text: &str) -> Result<Duration, DomainError> {
    let invalid = || {
        DomainError::invalid(
            "step",
            format!("`{text}` is not a step like 60s, 5m, 1h or 1d"),
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (amount, unit) = text.split_at(split);
    let amount: i64 = amount.parse().map_err(|_| invalid())?;
    if amount == 0 || amount > 1_000_000 {
        return Err(invalid());
    }
    match unit {
        "s" => Ok(Duration::seconds(amount)),
        "m" => Ok(Duration::minutes(amount)),
        "h" => Ok(Duration::hours(amount)),
        "d" => Ok(Duration::days(amount)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_or_are_refused() {
        let check = |text: &str, expected: Option<i64>| {
            assert_eq!(
                parse_step(text).ok().map(|step| step.num_seconds()),
                expected,
                "{text}"
            );
        };
        check("60s", Some(60));
        check("5m", Some(300));
        check("1h", Some(3600));
        check("1d", Some(86_400));
        check("0m", None);
        check("m", None);
        check("5", None);
        check("5w", None);
        check("-5m", None);
        check("99999999999999999999m", None);
        check("5m;DROP", None);
    }

    #[test]
    fn range_queries_are_bounded() {
        let to = Utc::now();
        let minute = Duration::minutes(1);
        assert!(RangeQuery::new(to - Duration::days(7), to, minute, Aggregation::Avg).is_ok());
        assert!(RangeQuery::new(to, to, minute, Aggregation::Avg).is_err());
        assert!(RangeQuery::new(to - Duration::days(30), to, minute, Aggregation::Avg).is_err());
        assert!(
            RangeQuery::new(
                to - Duration::hours(1),
                to,
                Duration::seconds(10),
                Aggregation::Avg
            )
            .is_err()
        );
        assert!(
            RangeQuery::new(
                to - Duration::days(365),
                to,
                Duration::days(1),
                Aggregation::Avg
            )
            .is_err()
        );
    }
}
