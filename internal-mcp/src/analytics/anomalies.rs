//! Anomaly windows in a service's metrics: robust z-scores of per-bucket values against a trailing
//! baseline. SQL averages the raw samples per bucket (one index range scan per series); the scan
//! over the buckets is `scan`'s.
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

use super::scan::{BucketedSeries, NOISE_BUCKETS, scan_all};
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

/// $1 service ids, $2 metric or NULL, $3 since, $4 until, $5 bucket minutes, $6 buckets of history
/// before `since` the baselines need. One row per series: its buckets' times and mean values,
/// oldest first (an index range scan of each series' samples).
pub(crate) const BUCKETS: &str = r#"
SELECT s.name AS service, ms.name AS metric,
       array_agg(b.bucket ORDER BY b.bucket) AS times, array_agg(b.value ORDER BY b.bucket) AS "values"
  FROM metric_series ms
  JOIN services s ON s.organization_id = ms.organization_id AND s.id = ms.service_id
 CROSS JOIN LATERAL (
     SELECT date_bin(make_interval(mins => $5), sample.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
            avg(sample.value) AS value
       FROM metric_samples sample
      WHERE sample.series_id = ms.id
        AND sample.ts >= $3 - make_interval(mins => $5 * $6)
        AND sample.ts < $4
      GROUP BY 1
 ) b
 WHERE s.id = ANY ($1) AND ($2::text IS NULL OR ms.name = $2)
 GROUP BY ms.id, s.name, ms.name
 ORDER BY s.name, ms.name
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
    Ok((report, BUCKETS))
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
    let history = parameters.baseline_buckets.max(NOISE_BUCKETS as i32);
    let series: Vec<BucketedSeries> = sqlx::query_as(BUCKETS)
        .bind(service_ids)
        .bind(metric)
        .bind(since)
        .bind(until)
        .bind(parameters.bucket_minutes)
        .bind(history)
        .fetch_all(&mut **transaction)
        .await
        .map_err(|error| reader.failure(error))?;
    Ok(scan_all(&series, since, parameters))
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
