//! Anomaly windows in a service's metrics: robust z-scores of per-bucket values against a trailing
//! baseline, computed in one SQL statement over the raw samples.
//!
//! For each bucket, the baseline is the median of the preceding `K/2` buckets (the level), the
//! difference between the medians of the two halves of the preceding `K` buckets (the trend), and
//! the noise: 1.048 times the median bucket-to-bucket change over the preceding 60 buckets, which
//! daily ramps and level shifts barely move (it is the standard deviation of independent noise).
//! A bucket's deviation is measured from the nearer of two expectations, the level and the level
//! carried along its trend, so neither a ramp nor a recent jump alone counts as an anomaly.
//!
//! A window opens at a bucket whose |z| reaches the threshold (default 6) when the next bucket
//! keeps at least half of it on the same side. The baseline is then frozen, so a long anomaly
//! cannot become its own baseline, and the window closes at the first bucket back within half the
//! threshold. Windows are chained per series: a new one may only open a full baseline after the
//! previous one closed, which keeps the echo of a spike (its baseline is contaminated) out.

use chrono::{DateTime, Duration, Utc};
use rmcp::schemars;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{check_metric, find_service, latest_sample, within};
use crate::error::Error;
use crate::reader::{Reader, ScopedTransaction};

/// The longest range one scan may cover.
pub const MAX_RANGE_DAYS: i64 = 7;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectAnomaliesArguments {
    /// The service's name, e.g. `checkout-api`.
    pub service: String,
    /// One of latency_p50_ms, latency_p95_ms, error_rate, request_rate, cpu_utilization; all five
    /// when absent.
    #[serde(default)]
    pub metric: Option<String>,
    /// Start of the scan, RFC 3339. Default: 24 hours before `until`.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// End of the scan (exclusive), RFC 3339. Default: just after the service's latest sample.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Minutes per bucket, 1 to 60 (default 1); samples are averaged per bucket first.
    #[serde(default)]
    pub bucket_minutes: Option<u32>,
    /// Buckets in the trailing baseline, 10 to 240 (default 30).
    #[serde(default)]
    pub baseline_buckets: Option<u32>,
    /// The |z| a bucket needs to open a window, 3 to 100 (default 6).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// At most this many windows, strongest first, 1 to 100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomalyReport {
    pub service: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket_minutes: u32,
    /// How the windows were found, in one paragraph.
    pub method: String,
    /// Strongest first.
    pub windows: Vec<AnomalyWindow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A stretch of buckets where one metric left its baseline.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct AnomalyWindow {
    pub service: String,
    pub metric: String,
    /// `above` or `below` the baseline.
    pub direction: String,
    /// The first anomalous bucket.
    pub start: DateTime<Utc>,
    /// The first bucket back to normal; absent while the anomaly is still going at `until`.
    pub end: Option<DateTime<Utc>>,
    pub ongoing: bool,
    pub buckets: i32,
    /// The largest deviation in the window, in units of the baseline's noise (signed).
    pub peak_z: f64,
    pub peak_value: f64,
    pub peak_at: DateTime<Utc>,
    /// The baseline level when the window opened.
    pub baseline: f64,
}

/// The tuning of one scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanParameters {
    pub bucket_minutes: i32,
    pub baseline_buckets: i32,
    pub threshold: f64,
    pub limit: i64,
}

impl ScanParameters {
    pub(crate) const DEFAULT: ScanParameters = ScanParameters {
        bucket_minutes: 1,
        baseline_buckets: 30,
        threshold: 6.0,
        limit: 20,
    };
}

/// Buckets over which the noise is measured.
const NOISE_BUCKETS: i32 = 60;

/// $1 service ids, $2 metric or NULL, $3 since, $4 until, $5 bucket minutes, $6 baseline buckets
/// (K), $7 noise buckets (W), $8 opening |z|, $9 closing |z|, $10 limit.
pub(crate) const FIND_WINDOWS: &str = r#"
WITH RECURSIVE series AS (
    SELECT ms.id, ms.name AS metric, s.name AS service
      FROM metric_series ms
      JOIN services s ON s.organization_id = ms.organization_id AND s.id = ms.service_id
     WHERE s.id = ANY ($1) AND ($2::text IS NULL OR ms.name = $2)
),
buckets AS (
    SELECT series.id AS series_id,
           date_bin(make_interval(mins => $5), sample.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           avg(sample.value) AS value
      FROM series
      JOIN metric_samples sample ON sample.series_id = series.id
     WHERE sample.ts >= $3 - make_interval(mins => $5 * greatest($6, $7))
       AND sample.ts < $4
     GROUP BY 1, 2
),
arrays AS (
    SELECT series_id,
           array_agg(bucket ORDER BY bucket) AS times,
           array_agg(value ORDER BY bucket) AS vals,
           array_agg(step ORDER BY bucket) AS steps
      FROM (SELECT *, abs(value - lag(value) OVER (PARTITION BY series_id ORDER BY bucket)) AS step
              FROM buckets) with_steps
     GROUP BY series_id
),
baselines AS (
    SELECT a.series_id, i, a.vals[i] AS value, a.vals[i + 1] AS next_value,
           recent.value AS level,
           (recent.value - earlier.value) / ($6 / 2) AS slope,
           greatest(1.0484 * noise.value, 0.01 * abs(recent.value), 1e-6) AS spread
      FROM arrays a
     CROSS JOIN LATERAL generate_subscripts(a.vals, 1) AS i
     CROSS JOIN LATERAL (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS value
                           FROM unnest(a.vals[i - $6 / 2 : i - 1]) AS v) recent
     CROSS JOIN LATERAL (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS value
                           FROM unnest(a.vals[i - $6 : i - $6 / 2 - 1]) AS v) earlier
     CROSS JOIN LATERAL (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS value
                           FROM unnest(a.steps[greatest(i - $7 + 1, 2) : i - 1]) AS v) noise
     WHERE a.times[i] >= $3 AND i > $6 AND i < cardinality(a.vals)
),
starts AS (
    SELECT b.series_id, b.i, b.level, b.slope, b.spread, sign(now_.z) AS direction
      FROM baselines b
     CROSS JOIN LATERAL (
         SELECT CASE WHEN sign(flat) = sign(trend) THEN sign(flat) * least(abs(flat), abs(trend)) ELSE 0 END / b.spread AS z
           FROM (SELECT b.value - b.level AS flat, b.value - b.level - b.slope * ($6 / 4.0 + 0.5) AS trend) d
     ) now_
     CROSS JOIN LATERAL (
         SELECT CASE WHEN sign(flat) = sign(trend) THEN sign(flat) * least(abs(flat), abs(trend)) ELSE 0 END / b.spread AS z
           FROM (SELECT b.next_value - b.level AS flat, b.next_value - b.level - b.slope * ($6 / 4.0 + 1.5) AS trend) d
     ) next_
     WHERE abs(now_.z) >= $8 AND sign(next_.z) = sign(now_.z) AND abs(next_.z) >= $9
),
windows AS (
    SELECT s.*, coalesce(calm.j, cardinality(a.vals) + 1) AS after_last, calm.j IS NULL AS ongoing
      FROM starts s
      JOIN arrays a ON a.series_id = s.series_id
     CROSS JOIN LATERAL (
         SELECT min(j) AS j
           FROM generate_series(s.i + 2, cardinality(a.vals)) AS j
          CROSS JOIN LATERAL (
              SELECT a.vals[j] - s.level AS flat,
                     a.vals[j] - s.level - s.slope * ($6 / 4.0 + 0.5 + least(j - s.i, $6 / 2)) AS trend
          ) d
          WHERE s.direction * CASE WHEN sign(flat) = sign(trend) THEN sign(flat) * least(abs(flat), abs(trend)) ELSE 0 END
                < $9 * s.spread
     ) calm
),
chain AS (
    SELECT first_window.*
      FROM (SELECT DISTINCT series_id FROM windows) with_windows
     CROSS JOIN LATERAL (SELECT w.* FROM windows w WHERE w.series_id = with_windows.series_id
                          ORDER BY w.i LIMIT 1) first_window
    UNION ALL
    SELECT next_window.*
      FROM chain c
     CROSS JOIN LATERAL (SELECT w.* FROM windows w WHERE w.series_id = c.series_id AND w.i >= c.after_last + $6
                          ORDER BY w.i LIMIT 1) next_window
)
SELECT series.service, series.metric,
       CASE WHEN k.direction > 0 THEN 'above' ELSE 'below' END AS direction,
       a.times[k.i] AS start,
       CASE WHEN k.ongoing THEN NULL ELSE a.times[k.after_last] END AS "end",
       k.ongoing,
       (k.after_last - k.i)::int AS buckets,
       peak.z AS peak_z, a.vals[peak.j] AS peak_value, a.times[peak.j] AS peak_at,
       k.level AS baseline
  FROM chain k
  JOIN arrays a ON a.series_id = k.series_id
  JOIN series ON series.id = k.series_id
 CROSS JOIN LATERAL (
     SELECT j, (a.vals[j] - k.level) / k.spread AS z
       FROM generate_series(k.i, k.after_last - 1) AS j
      ORDER BY abs(a.vals[j] - k.level) DESC LIMIT 1
 ) peak
 ORDER BY abs(peak.z) DESC, start
 LIMIT $10
"#;

/// The `detect_anomalies` tool.
pub async fn detect_anomalies(
    reader: &Reader,
    organization_id: Uuid,
    arguments: &DetectAnomaliesArguments,
) -> Result<(AnomalyReport, &'static str), Error> {
    let metric = check_metric(arguments.metric.as_deref())?;
    let parameters = ScanParameters {
        bucket_minutes: within(
            "bucket_minutes",
            arguments.bucket_minutes.unwrap_or(1),
            1..=60,
        )? as i32,
        baseline_buckets: (within(
            "baseline_buckets",
            arguments.baseline_buckets.unwrap_or(30),
            10..=240,
        )? / 2
            * 2) as i32,
        threshold: within("threshold", arguments.threshold.unwrap_or(6.0), 3.0..=100.0)?,
        limit: i64::from(within("limit", arguments.limit.unwrap_or(20), 1..=100)?),
    };
    let mut transaction = reader.begin(organization_id).await?;
    let service = find_service(reader, &mut transaction, &arguments.service).await?;
    let latest = latest_sample(reader, &mut transaction, service.id).await?;
    let until = match (arguments.until, latest) {
        (Some(until), _) => until,
        (None, Some(latest)) => latest + Duration::minutes(1),
        (None, None) => Utc::now(),
    };
    let since = arguments.since.unwrap_or(until - Duration::hours(24));
    if since >= until {
        return Err(Error::InvalidArgument("since must be before until".into()));
    }
    if until - since > Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::InvalidArgument(format!(
            "the scan may cover at most {MAX_RANGE_DAYS} days"
        )));
    }
    let windows = find_windows(
        reader,
        &mut transaction,
        &[service.id],
        metric.as_deref(),
        since,
        until,
        parameters,
    )
    .await?;
    transaction.rollback().await?;
    let hint = match (windows.is_empty(), latest) {
        (_, None) => Some(format!("{} has no samples at all", service.name)),
        (true, Some(latest)) if latest < since => Some(format!(
            "no samples in the range; the latest sample of {} is at {latest}",
            service.name
        )),
        (true, _) => {
            Some("no anomalies: every bucket stayed within the threshold of its baseline".into())
        }
        (false, _) => None,
    };
    let report = AnomalyReport {
        service: service.name,
        since,
        until,
        bucket_minutes: parameters.bucket_minutes as u32,
        method: method_description(parameters),
        windows,
        hint,
    };
    Ok((report, FIND_WINDOWS))
}

/// Anomaly windows of `service_ids` between `since` and `until`, strongest first. Shared with the
/// incident correlation.
pub(crate) async fn find_windows(
    reader: &Reader,
    transaction: &mut ScopedTransaction,
    service_ids: &[Uuid],
    metric: Option<&str>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    parameters: ScanParameters,
) -> Result<Vec<AnomalyWindow>, Error> {
    sqlx::query_as(FIND_WINDOWS)
        .bind(service_ids)
        .bind(metric)
        .bind(since)
        .bind(until)
        .bind(parameters.bucket_minutes)
        .bind(parameters.baseline_buckets)
        .bind(NOISE_BUCKETS)
        .bind(parameters.threshold)
        .bind(parameters.threshold / 2.0)
        .bind(parameters.limit)
        .fetch_all(&mut **transaction)
        .await
        .map_err(|error| reader.failure(error))
}

fn method_description(parameters: ScanParameters) -> String {
    format!(
        "Samples averaged per {} minute bucket(s). Each bucket is compared with the median of the preceding {} \
         buckets and with that median carried along the trend of the preceding {} buckets; its z-score is the \
         smaller deviation divided by the noise (1.048 x the median bucket-to-bucket change over the preceding {} \
         buckets). A window opens at |z| >= {} (the next bucket keeping |z| >= {} on the same side), freezes its \
         baseline, and closes at the first bucket back under |z| {}.",
        parameters.bucket_minutes,
        parameters.baseline_buckets / 2,
        parameters.baseline_buckets,
        NOISE_BUCKETS,
        parameters.threshold,
        parameters.threshold / 2.0,
        parameters.threshold / 2.0,
    )
}
