//! The anomaly scan over one series' buckets (see `anomalies` for the method): trailing robust
//! baselines, the windows they open and close, chained so an echo of a spike stays out. SQL
//! buckets the raw samples (an index range scan per series); the scan itself is a pass over a few
//! thousand numbers, which a loop does in microseconds and SQL in tens of milliseconds.

use chrono::{DateTime, Utc};

use super::anomalies::{AnomalyWindow, ScanParameters};

/// Buckets over which the noise is measured.
pub(crate) const NOISE_BUCKETS: usize = 60;

/// One series' buckets, oldest first, as the bucketing query returns them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct BucketedSeries {
    pub service: String,
    pub metric: String,
    pub times: Vec<DateTime<Utc>>,
    pub values: Vec<f64>,
}

/// The baseline of one bucket, from the buckets before it.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    level: f64,
    /// Change per bucket along the trend.
    slope: f64,
    spread: f64,
}

/// A bucket where a window opens.
#[derive(Debug, Clone, Copy)]
struct Start {
    index: usize,
    baseline: Baseline,
    direction: f64,
}

/// The windows of every series, strongest first, at most `parameters.limit`.
pub(crate) fn scan_all(
    series: &[BucketedSeries],
    since: DateTime<Utc>,
    parameters: ScanParameters,
) -> Vec<AnomalyWindow> {
    let mut windows: Vec<AnomalyWindow> = series
        .iter()
        .flat_map(|one| scan(one, since, parameters))
        .collect();
    windows.sort_by(|a, b| {
        b.peak_z
            .abs()
            .total_cmp(&a.peak_z.abs())
            .then(a.start.cmp(&b.start))
    });
    windows.truncate(usize::try_from(parameters.limit).unwrap_or(usize::MAX));
    windows
}

/// The chained windows of one series that open at or after `since`.
fn scan(
    series: &BucketedSeries,
    since: DateTime<Utc>,
    parameters: ScanParameters,
) -> Vec<AnomalyWindow> {
    let values = &series.values;
    let count = values.len().min(series.times.len());
    let baseline_buckets = usize::try_from(parameters.baseline_buckets).unwrap_or(0);
    let half = baseline_buckets / 2;
    let opening = parameters.threshold;
    let closing = parameters.threshold / 2.0;
    // How far along the trend a bucket's expectation is carried from the baseline's middle.
    let reach = baseline_buckets as f64 / 4.0;

    let mut windows = Vec::new();
    // A window may open only a full baseline after the previous one closed.
    let mut open_from = 0;
    let mut index = baseline_buckets.max(1);
    while index + 1 < count {
        if index < open_from || series.times[index] < since {
            index += 1;
            continue;
        }
        let baseline = baseline_at(values, index, half);
        let now = deviation(values[index], baseline, reach + 0.5) / baseline.spread;
        let next = deviation(values[index + 1], baseline, reach + 1.5) / baseline.spread;
        if now.abs() < opening || sign(next) != sign(now) || next.abs() < closing {
            index += 1;
            continue;
        }
        let start = Start {
            index,
            baseline,
            direction: sign(now),
        };
        let after_last = (index + 2..count)
            .find(|&later| {
                let carried = reach + 0.5 + (later - index).min(half) as f64;
                start.direction * deviation(values[later], baseline, carried)
                    < closing * baseline.spread
            })
            .unwrap_or(count);
        windows.push(window(series, start, after_last));
        open_from = after_last + baseline_buckets;
        index = open_from;
    }
    windows
}

/// The baseline of bucket `index` (at least `2 * half`): the median of the `half` buckets before
/// it, the trend from the median of the `half` before those, and the noise over the 60 before it.
fn baseline_at(values: &[f64], index: usize, half: usize) -> Baseline {
    let level = median(&values[index - half..index]).unwrap_or(values[index - 1]);
    let earlier = median(&values[index - 2 * half..index - half]).unwrap_or(level);
    let first_step = (index + 1).saturating_sub(NOISE_BUCKETS).max(1);
    let steps: Vec<f64> = (first_step..index)
        .map(|step| (values[step] - values[step - 1]).abs())
        .collect();
    let noise = median(&steps).map_or(0.0, |noise| 1.0484 * noise);
    Baseline {
        level,
        slope: if half == 0 {
            0.0
        } else {
            (level - earlier) / half as f64
        },
        spread: noise.max(0.01 * level.abs()).max(1e-6),
    }
}

/// How far `value` is from its expectation: the nearer of the level and the level carried
/// `carried` buckets along the trend, and zero when the two disagree on the side.
fn deviation(value: f64, baseline: Baseline, carried: f64) -> f64 {
    let flat = value - baseline.level;
    let trend = flat - baseline.slope * carried;
    if sign(flat) == sign(trend) {
        sign(flat) * flat.abs().min(trend.abs())
    } else {
        0.0
    }
}

fn window(series: &BucketedSeries, start: Start, after_last: usize) -> AnomalyWindow {
    let Start {
        index,
        baseline,
        direction,
    } = start;
    let mut peak = index;
    for candidate in index..after_last {
        if (series.values[candidate] - baseline.level).abs()
            > (series.values[peak] - baseline.level).abs()
        {
            peak = candidate;
        }
    }
    let ongoing = after_last >= series.values.len().min(series.times.len());
    AnomalyWindow {
        service: series.service.clone(),
        metric: series.metric.clone(),
        direction: if direction > 0.0 { "above" } else { "below" }.to_owned(),
        start: series.times[index],
        end: (!ongoing).then(|| series.times[after_last]),
        ongoing,
        buckets: i32::try_from(after_last - index).unwrap_or(i32::MAX),
        peak_z: (series.values[peak] - baseline.level) / baseline.spread,
        peak_value: series.values[peak],
        peak_at: series.times[peak],
        baseline: baseline.level,
    }
}

/// -1, 0 or 1 (unlike `f64::signum`, zero is zero).
fn sign(value: f64) -> f64 {
    if value > 0.0 {
        1.0
    } else if value < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The median, interpolated between the middle two of an even count (as `percentile_cont(0.5)`).
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        f64::midpoint(sorted[middle - 1], sorted[middle])
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    const PARAMETERS: ScanParameters = ScanParameters::DEFAULT;

    fn series(values: Vec<f64>) -> BucketedSeries {
        let start = Utc.with_ymd_and_hms(2025, 6, 10, 12, 0, 0).unwrap();
        BucketedSeries {
            service: "checkout-api".into(),
            metric: "error_rate".into(),
            times: (0..values.len())
                .map(|minute| start + Duration::minutes(minute as i64))
                .collect(),
            values,
        }
    }

    /// A noisy flat line around `level`, deterministic.
    fn noisy(count: usize, level: f64) -> Vec<f64> {
        (0..count)
            .map(|minute| level + 0.002 * ((minute * 7919 % 13) as f64 - 6.0))
            .collect()
    }

    #[test]
    fn medians_interpolate_like_percentile_cont() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn a_spike_opens_one_window_that_closes_when_the_values_return() {
        let mut values = noisy(200, 0.01);
        for value in &mut values[120..135] {
            *value = 0.2;
        }
        let one = series(values);
        let windows = scan_all(std::slice::from_ref(&one), one.times[0], PARAMETERS);
        assert_eq!(windows.len(), 1, "{windows:?}");
        let window = &windows[0];
        assert_eq!(window.direction, "above");
        assert_eq!(window.start, one.times[120]);
        assert_eq!(window.end, Some(one.times[135]));
        assert_eq!(window.buckets, 15);
        assert!(!window.ongoing);
        assert!(window.peak_z > 6.0, "{window:?}");
        assert!((window.baseline - 0.01).abs() < 0.005, "{window:?}");
    }

    #[test]
    fn an_anomaly_still_going_at_the_end_is_ongoing_and_a_lone_outlier_is_not_a_window() {
        let mut values = noisy(150, 0.01);
        values[60] = 0.5; // one bucket alone: the next one does not follow it
        for value in &mut values[140..] {
            *value = 0.3;
        }
        let one = series(values);
        let windows = scan_all(std::slice::from_ref(&one), one.times[0], PARAMETERS);
        assert_eq!(windows.len(), 1, "{windows:?}");
        assert!(windows[0].ongoing);
        assert_eq!(windows[0].end, None);
        assert_eq!(windows[0].start, one.times[140]);
    }

    #[test]
    fn a_steady_ramp_is_not_an_anomaly_and_windows_before_since_are_left_out() {
        let ramp: Vec<f64> = (0..300).map(|minute| 100.0 + minute as f64).collect();
        let one = series(ramp);
        assert!(scan_all(std::slice::from_ref(&one), one.times[0], PARAMETERS).is_empty());

        let mut values = noisy(200, 0.01);
        for value in &mut values[50..60] {
            *value = 0.2;
        }
        let one = series(values);
        assert!(scan_all(std::slice::from_ref(&one), one.times[100], PARAMETERS).is_empty());
    }

    #[test]
    fn too_few_buckets_give_no_window_and_no_panic() {
        for count in 0..40 {
            let one = series(vec![1.0; count]);
            assert!(
                scan_all(
                    std::slice::from_ref(&one),
                    one.times.first().copied().unwrap_or_else(Utc::now),
                    PARAMETERS
                )
                .is_empty()
            );
        }
    }
}
