//! The `metrics` toolset: a service's metric over a window, summarised for a reader.
//!
//! The API aggregates in the database: this asks for the whole window as one bucket (min, avg,
//! max, p95) and for about 60 averaged points, instead of fetching thousands of raw samples.

use chrono::{DateTime, Duration, Utc};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::run::Parameters;
use super::{
    Json, Readable, ToolCall, ToolFailure, parse_duration, resolve_service, rounded, short_time,
};
use crate::error::Error;
use crate::server::ExternalServer;

/// The most points a summary carries.
pub const MAX_POINTS: i64 = 60;
/// The longest window the API accepts.
const MAX_WINDOW_DAYS: i64 = 90;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricArgs {
    /// Service name, e.g. checkout-api (or its id).
    pub service: String,
    /// error_rate (0-1), latency_p95_ms, latency_p50_ms, request_rate (rps) or cpu_utilization (0-1).
    pub metric: String,
    /// How far back from `end`: 30m to 90d, e.g. 1h, 6h, 7d. Default 24h.
    pub window: Option<String>,
    /// End of the window, RFC 3339. Default now.
    pub end: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MetricSummary {
    pub service: String,
    pub metric: String,
    pub unit: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub p95: Option<f64>,
    /// The last point's value.
    pub latest: Option<f64>,
    /// rising, falling, flat (last third vs first third) or unknown.
    pub trend: String,
    pub change_percent: Option<f64>,
    /// The step with the highest average.
    pub peak: Option<MetricPoint>,
    /// Width of each point.
    pub step_minutes: i64,
    /// Step averages, oldest first.
    pub points: Vec<MetricPoint>,
    pub web_url: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub struct MetricPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
}

#[tool_router(router = metrics_router, vis = "pub(crate)")]
impl ExternalServer {
    #[tool(
        title = "Metric summary",
        description = "A service's metric over a time window, summarised: min, avg, max, p95, latest, trend, the peak step and up to 60 averaged points. Use for 'how did latency look today?' or to see when a spike began.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn metric_summary(
        &self,
        arguments: Parameters<MetricArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<MetricSummary>, ToolFailure> {
        self.run(arguments, context, "summarise the metric", summarise)
            .await
    }
}

/// Resolves the service and metric, then asks the API for the window's statistics and points.
///
/// The calls run one after another: a rate-limited token then waits its turn instead of having
/// several calls refused at once.
#[instrument(skip_all, fields(tool = "metric_summary"))]
pub async fn summarise(call: &ToolCall, args: MetricArgs) -> Result<MetricSummary, Error> {
    let window = parse_duration(args.window.as_deref().unwrap_or("24h"), "window")?;
    if window < Duration::minutes(30) || window > Duration::days(MAX_WINDOW_DAYS) {
        return Err(Error::InvalidInput(format!(
            "`window` must be between 30m and {MAX_WINDOW_DAYS}d"
        )));
    }
    let to = match args
        .end
        .as_deref()
        .map(str::trim)
        .filter(|end| !end.is_empty())
    {
        Some(end) => DateTime::parse_from_rfc3339(end)
            .map_err(|_| {
                Error::InvalidInput(format!(
                    "`end` must be an RFC 3339 time such as 2026-01-05T12:00:00Z, not `{end}`"
                ))
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let from = to - window;
    let service = resolve_service(&call.api, &args.service).await?;
    let metric = args.metric.trim();
    let series = call.api.metric_series(service.id).await?;
    let Some(series) = series.into_iter().find(|series| series.name == metric) else {
        return Err(Error::NotFound {
            detail: format!(
                "{} has no metric `{metric}`; it reports error_rate, latency_p50_ms, latency_p95_ms, request_rate and cpu_utilization",
                service.name
            ),
        });
    };
    let window_minutes = window.num_minutes();
    let step_minutes = (window_minutes + MAX_POINTS - 1) / MAX_POINTS;
    let mut whole = [None; 4];
    for (slot, aggregation) in whole.iter_mut().zip(["min", "avg", "max", "p95"]) {
        let range = call
            .api
            .metric_range(service.id, metric, from, to, window_minutes, aggregation)
            .await?;
        *slot = range.points.first().map(|point| point.value);
    }
    let [min, avg, max, p95] = whole;
    let averaged = call
        .api
        .metric_range(service.id, metric, from, to, step_minutes, "avg")
        .await?;
    let digits = if series.unit == "ratio" { 4 } else { 2 };
    let points: Vec<MetricPoint> = averaged
        .points
        .iter()
        .map(|point| MetricPoint {
            at: point.at,
            value: rounded(point.value, digits),
        })
        .collect();
    let (trend, change_percent) = trend_of(&points);
    let peak = points
        .iter()
        .copied()
        .max_by(|left, right| left.value.total_cmp(&right.value));
    let hint = points.is_empty().then(|| {
        format!(
            "No samples between {} and {}: data may end earlier; the service's latest sample is at {}.",
            short_time(from),
            short_time(to),
            series.latest_at.map_or("unknown".to_owned(), short_time)
        )
    });
    Ok(MetricSummary {
        web_url: call.links.metric(&service.name, metric, from, to),
        service: service.name,
        metric: metric.to_owned(),
        unit: series.unit,
        from,
        to,
        min: min.map(|value| rounded(value, digits)),
        avg: avg.map(|value| rounded(value, digits)),
        max: max.map(|value| rounded(value, digits)),
        p95: p95.map(|value| rounded(value, digits)),
        latest: points.last().map(|point| point.value),
        trend: trend.to_owned(),
        change_percent,
        peak,
        step_minutes,
        points,
        hint,
    })
}

/// Compares the mean of the last third of the points with the first third: a change beyond 10%
/// is a trend.
fn trend_of(points: &[MetricPoint]) -> (&'static str, Option<f64>) {
    if points.len() < 3 {
        return ("unknown", None);
    }
    let third = points.len() / 3;
    let mean = |slice: &[MetricPoint]| {
        slice.iter().map(|point| point.value).sum::<f64>() / slice.len() as f64
    };
    let first = mean(&points[..third]);
    let last = mean(&points[points.len() - third..]);
    if first.abs() < f64::EPSILON {
        return if last.abs() < f64::EPSILON {
            ("flat", Some(0.0))
        } else {
            ("rising", None)
        };
    }
    let change = (last - first) / first.abs() * 100.0;
    let trend = if change > 10.0 {
        "rising"
    } else if change < -10.0 {
        "falling"
    } else {
        "flat"
    };
    (trend, Some(rounded(change, 1)))
}

impl Readable for MetricSummary {
    fn readable(&self) -> String {
        let figure = |value: Option<f64>| value.map_or("n/a".to_owned(), |value| value.to_string());
        let mut text = format!(
            "{} {} ({}) from {} to {}: min {}, avg {}, max {}, p95 {}, latest {}; trend {}{}.",
            self.service,
            self.metric,
            self.unit,
            short_time(self.from),
            short_time(self.to),
            figure(self.min),
            figure(self.avg),
            figure(self.max),
            figure(self.p95),
            figure(self.latest),
            self.trend,
            self.change_percent
                .map_or(String::new(), |change| format!(" ({change:+}%)")),
        );
        if let Some(peak) = self.peak {
            text.push_str(&format!(
                "\nPeak: {} in the {} min from {}.",
                peak.value,
                self.step_minutes,
                short_time(peak.at)
            ));
        }
        if !self.points.is_empty() {
            let values: Vec<String> = self
                .points
                .iter()
                .map(|point| point.value.to_string())
                .collect();
            text.push_str(&format!(
                "\n{} points, {} min apart from {}: {}",
                self.points.len(),
                self.step_minutes,
                short_time(self.points[0].at),
                values.join(" ")
            ));
        }
        if let Some(hint) = &self.hint {
            text.push('\n');
            text.push_str(hint);
        }
        text.push('\n');
        text.push_str(&self.web_url);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[f64]) -> Vec<MetricPoint> {
        values
            .iter()
            .map(|&value| MetricPoint {
                at: Utc::now(),
                value,
            })
            .collect()
    }

    #[test]
    fn trends_compare_the_last_third_with_the_first() {
        assert_eq!(
            trend_of(&points(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0])).0,
            "rising"
        );
        assert_eq!(
            trend_of(&points(&[2.0, 2.0, 2.0, 1.0, 1.0, 1.0])).0,
            "falling"
        );
        assert_eq!(trend_of(&points(&[1.0, 1.05, 1.0])).0, "flat");
        assert_eq!(trend_of(&points(&[1.0])).0, "unknown");
    }
}
