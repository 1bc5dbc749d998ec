//! Per-minute metric series of one service: a daily and weekly rhythm, per-service levels, noise,
//! a few random blips, and the anomalies the stories plant.
//!
//! The five metrics move together the way real ones do: latency and CPU follow the load, errors
//! rise a little with it. Values are rounded to the precision a metrics pipeline would keep, and
//! alerts are evaluated on these rounded values, which are exactly what the database stores.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};

use super::catalog::TrafficShape;
use super::random::Random;
use crate::domain::kinds::Tier;

/// The minutes the seed covers: `minutes` samples, one a minute, the last one at `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// The first sample's time.
    pub start: DateTime<Utc>,
    /// The last sample's time: the seed's `until`, truncated to the minute.
    pub end: DateTime<Utc>,
    pub minutes: usize,
}

/// What a service's metrics look like on a normal weekday, drawn once per service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceProfile {
    /// Requests per second at the daily peak.
    pub peak_request_rate: f64,
    /// Median latency when the service is idle; it grows with load.
    pub idle_latency_p50_ms: f64,
    /// p95 over p50 when idle; it grows with load too.
    pub latency_spread: f64,
    /// Share of failed requests in normal operation.
    pub error_rate: f64,
    pub idle_cpu: f64,
    pub peak_cpu: f64,
    /// The hour (UTC) of the service's daily peak: the organisation's, give or take an hour.
    pub peak_hour: f64,
    pub weekend_factor: f64,
    /// Load at the quietest hour, as a share of the peak.
    pub night_floor: f64,
}

/// The five standard metrics of one service over the window, index `i` being minute `i`.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSeries {
    pub latency_p50_ms: Vec<f64>,
    pub latency_p95_ms: Vec<f64>,
    pub error_rate: Vec<f64>,
    pub request_rate: Vec<f64>,
    pub cpu_utilization: Vec<f64>,
}

/// Something going wrong with a service for a while.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Disturbance {
    /// Requests fail at about `error_rate`, and the p95 latency is multiplied by `latency_factor`
    /// (retries and timeouts).
    Errors {
        error_rate: f64,
        latency_factor: f64,
    },
    /// The p95 latency climbs to `factor` times its usual daily peak, whatever the time of day.
    SlowResponses { factor: f64 },
    /// CPU pinned at about `level`, with latency suffering somewhat.
    CpuSaturation { level: f64 },
}

/// A disturbance over minutes `start..end` of the window (indices, `end` excluded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Anomaly {
    pub start: usize,
    pub end: usize,
    pub disturbance: Disturbance,
}

/// How a random blip upsets a service: like an anomaly, but milder and relative to the moment's
/// values, so it may or may not trip a monitor.
#[derive(Debug, Clone, Copy)]
enum Blip {
    ErrorBurst { added_error_rate: f64 },
    LatencySpike { factor: f64 },
    CpuSpike { added_cpu: f64 },
}

#[derive(Debug, Clone, Copy)]
struct PlacedBlip {
    start: usize,
    end: usize,
    blip: Blip,
}

/// Random blips stay this many minutes away from planted anomalies, so the hours around a story
/// show nothing else an assistant could blame.
const BLIP_DISTANCE_FROM_ANOMALIES: usize = 360;

impl Window {
    pub(crate) fn ending_at(end: DateTime<Utc>, days: u32) -> Self {
        let minutes = days as usize * 1440;
        Self {
            start: end - TimeDelta::minutes(minutes as i64 - 1),
            end,
            minutes,
        }
    }

    pub(crate) fn time_of(&self, index: usize) -> DateTime<Utc> {
        self.start + TimeDelta::minutes(index as i64)
    }

    /// The index of the sample at `time`, which must fall inside the window on a whole minute.
    pub(crate) fn index_of(&self, time: DateTime<Utc>) -> usize {
        let minutes = (time - self.start).num_minutes();
        assert!(
            (0..self.minutes as i64).contains(&minutes),
            "{time} is outside the seeded window {}..={}",
            self.start,
            self.end
        );
        minutes as usize
    }

    /// Minutes since Monday 00:00 UTC of the first sample.
    fn start_minute_of_week(&self) -> usize {
        let day = self.start.weekday().num_days_from_monday() as usize;
        day * 1440 + self.start.hour() as usize * 60 + self.start.minute() as usize
    }
}

impl ServiceProfile {
    /// Draws the levels of a service; tier 1 services carry more traffic.
    pub(crate) fn draw(random: &mut Random, tier: Tier, traffic: TrafficShape) -> Self {
        let (lowest_rate, highest_rate) = match tier {
            Tier::Tier1 => (150.0, 2000.0),
            Tier::Tier2 => (20.0, 600.0),
            Tier::Tier3 => (5.0, 150.0),
        };
        let peak_request_rate = random.log_between(lowest_rate, highest_rate);
        let idle_cpu = random.between(0.04, 0.1);
        Self {
            peak_request_rate,
            idle_latency_p50_ms: random.log_between(20.0, 160.0),
            latency_spread: random.between(2.3, 3.2),
            error_rate: random.log_between(0.001, 0.008),
            idle_cpu,
            peak_cpu: random.between(0.2_f64.max(idle_cpu + 0.12), 0.7),
            peak_hour: traffic.peak_hour + random.between(-1.0, 1.0),
            weekend_factor: traffic.weekend_factor * random.between(0.9, 1.05),
            night_floor: random.between(0.2, 0.4),
        }
    }

    /// The p95 latency at the daily peak of a weekday, without noise: what a latency monitor's
    /// threshold is set against.
    pub(crate) fn peak_latency_p95_ms(&self) -> f64 {
        self.latency_p50_ms_at(1.0) * self.latency_spread_at(1.0)
    }

    fn latency_p50_ms_at(&self, load: f64) -> f64 {
        self.idle_latency_p50_ms * (1.0 + 0.25 * load * load)
    }

    fn latency_spread_at(&self, load: f64) -> f64 {
        self.latency_spread + 0.6 * load
    }

    /// Load as a share of the weekday peak, at `minute_of_week` (0 is Monday 00:00 UTC).
    fn load_at(&self, minute_of_week: usize) -> f64 {
        let day = minute_of_week / 1440;
        let hour = (minute_of_week % 1440) as f64 / 60.0;
        let phase = (hour - self.peak_hour) / 24.0 * std::f64::consts::TAU;
        // 1 at the peak, 0 twelve hours away; the power narrows the busy part of the day.
        let closeness_to_peak = ((1.0 + phase.cos()) / 2.0).powf(1.5);
        let weekday_load = self.night_floor + (1.0 - self.night_floor) * closeness_to_peak;
        let is_weekend = day >= 5;
        if is_weekend {
            weekday_load * self.weekend_factor
        } else {
            weekday_load
        }
    }
}

impl ServiceSeries {
    /// The series of the standard metric `metric` (a name from `STANDARD_METRICS`).
    pub(crate) fn metric(&self, metric: &str) -> &[f64] {
        match metric {
            "latency_p50_ms" => &self.latency_p50_ms,
            "latency_p95_ms" => &self.latency_p95_ms,
            "error_rate" => &self.error_rate,
            "request_rate" => &self.request_rate,
            "cpu_utilization" => &self.cpu_utilization,
            unknown => panic!("`{unknown}` is not a standard metric"),
        }
    }
}

/// Generates a service's five series over `window`, with `anomalies` planted (indices into the
/// window) and random blips drawn from `random`.
pub(crate) fn generate(
    profile: &ServiceProfile,
    window: &Window,
    anomalies: &[Anomaly],
    random: &mut Random,
) -> ServiceSeries {
    let blips = place_blips(window, anomalies, random);
    let minutes = window.minutes;
    let mut series = ServiceSeries {
        latency_p50_ms: Vec::with_capacity(minutes),
        latency_p95_ms: Vec::with_capacity(minutes),
        error_rate: Vec::with_capacity(minutes),
        request_rate: Vec::with_capacity(minutes),
        cpu_utilization: Vec::with_capacity(minutes),
    };
    let start_minute_of_week = window.start_minute_of_week();
    // A slow random walk pulled back to zero, so some hours and days are busier than others.
    let mut wander = random.normal() * 0.04;
    for index in 0..minutes {
        wander = 0.995 * wander + 0.004 * random.normal();
        let load =
            (profile.load_at((start_minute_of_week + index) % 10_080) * (1.0 + wander)).max(0.02);

        let request_rate = profile.peak_request_rate * load * (1.0 + 0.025 * random.normal());
        let mut cpu = profile.idle_cpu
            + (profile.peak_cpu - profile.idle_cpu) * load
            + 0.012 * random.normal();
        let mut latency_p50 = profile.latency_p50_ms_at(load) * (0.04 * random.normal()).exp();
        let mut latency_p95 =
            latency_p50 * profile.latency_spread_at(load) * (0.05 * random.normal()).exp();
        let mut error_rate =
            profile.error_rate * (0.8 + 0.4 * load) * (0.3 * random.normal() - 0.045).exp();

        for placed in blips
            .iter()
            .filter(|placed| (placed.start..placed.end).contains(&index))
        {
            match placed.blip {
                Blip::ErrorBurst { added_error_rate } => {
                    error_rate += added_error_rate * (1.0 + 0.15 * random.normal()).max(0.5);
                    latency_p95 *= 1.2;
                }
                Blip::LatencySpike { factor } => {
                    latency_p50 *= factor.sqrt();
                    latency_p95 *= factor;
                }
                Blip::CpuSpike { added_cpu } => {
                    cpu += added_cpu;
                    latency_p95 *= 1.15;
                }
            }
        }
        for anomaly in anomalies
            .iter()
            .filter(|anomaly| (anomaly.start..anomaly.end).contains(&index))
        {
            match anomaly.disturbance {
                Disturbance::Errors {
                    error_rate: level,
                    latency_factor,
                } => {
                    error_rate = level * (0.1 * random.normal()).exp().clamp(0.8, 1.25);
                    latency_p50 *= 1.0 + (latency_factor - 1.0) * 0.3;
                    latency_p95 *= latency_factor;
                    cpu += 0.05;
                }
                Disturbance::SlowResponses { factor } => {
                    latency_p50 *= factor.sqrt();
                    latency_p95 = profile.peak_latency_p95_ms()
                        * factor
                        * (0.05 * random.normal()).exp().clamp(0.9, 1.12);
                }
                Disturbance::CpuSaturation { level } => {
                    cpu = level + (0.012 * random.normal()).clamp(-0.04, 0.04);
                    latency_p50 *= 1.3;
                    latency_p95 *= 1.5;
                }
            }
        }

        series
            .request_rate
            .push(round_to(request_rate.max(0.0), 100.0));
        series
            .cpu_utilization
            .push(round_to(cpu.max(0.005), 10_000.0));
        series
            .latency_p50_ms
            .push(round_to(latency_p50.max(0.5), 10.0));
        series
            .latency_p95_ms
            .push(round_to(latency_p95.max(latency_p50).max(0.5), 10.0));
        series
            .error_rate
            .push(round_to(error_rate.clamp(0.0, 1.0), 100_000.0));
    }
    series
}

/// Draws the random blips of one service: about one every other day, kept away from the planted
/// anomalies.
fn place_blips(window: &Window, anomalies: &[Anomaly], random: &mut Random) -> Vec<PlacedBlip> {
    let days = window.minutes / 1440;
    let mut blips = Vec::new();
    for _ in 0..days {
        if !random.chance(0.55) {
            continue;
        }
        let (blip, duration) = match random.unit() {
            share if share < 0.45 => (
                Blip::ErrorBurst {
                    added_error_rate: random.between(0.02, 0.14),
                },
                random.integer(2, 12),
            ),
            share if share < 0.8 => (
                Blip::LatencySpike {
                    factor: random.between(1.6, 3.2),
                },
                random.integer(3, 20),
            ),
            _ => (
                Blip::CpuSpike {
                    added_cpu: random.between(0.15, 0.4),
                },
                random.integer(5, 25),
            ),
        };
        let start = random.index(window.minutes);
        let end = (start + duration as usize).min(window.minutes);
        let too_close = anomalies.iter().any(|anomaly| {
            start < anomaly.end + BLIP_DISTANCE_FROM_ANOMALIES
                && anomaly.start < end + BLIP_DISTANCE_FROM_ANOMALIES
        });
        if too_close {
            continue;
        }
        blips.push(PlacedBlip { start, end, blip });
    }
    blips
}

/// `value` rounded to the nearest `1 / per_unit`.
fn round_to(value: f64, per_unit: f64) -> f64 {
    (value * per_unit).round() / per_unit
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn window(days: u32) -> Window {
        // A Monday, so the first five days are weekdays.
        let end =
            Utc.with_ymd_and_hms(2025, 3, 10, 0, 0, 0).unwrap() + TimeDelta::days(i64::from(days));
        Window::ending_at(end, days)
    }

    fn profile(seed: u64) -> ServiceProfile {
        let traffic = TrafficShape {
            peak_hour: 14.0,
            weekend_factor: 0.6,
        };
        ServiceProfile::draw(&mut Random::new(seed), Tier::Tier1, traffic)
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len() as f64
    }

    #[test]
    fn a_window_ends_at_its_end_and_has_one_sample_a_minute() {
        let window = window(2);
        assert_eq!(window.minutes, 2880);
        assert_eq!(window.time_of(window.minutes - 1), window.end);
        assert_eq!(window.index_of(window.end), window.minutes - 1);
        assert_eq!(window.index_of(window.start), 0);
    }

    #[test]
    fn values_stay_plausible_and_bounded() {
        let window = window(7);
        for seed in 0..20 {
            let profile = profile(seed);
            let series = generate(&profile, &window, &[], &mut Random::new(seed));
            for index in 0..window.minutes {
                let error_rate = series.error_rate[index];
                assert!((0.0..=1.0).contains(&error_rate), "error rate {error_rate}");
                assert!(series.cpu_utilization[index] >= 0.0);
                assert!(series.latency_p50_ms[index] > 0.0);
                assert!(series.latency_p95_ms[index] >= series.latency_p50_ms[index]);
                assert!(series.request_rate[index] >= 0.0);
            }
            assert!((5.0..=2000.0).contains(&profile.peak_request_rate));
            let spread = mean(&series.latency_p95_ms) / mean(&series.latency_p50_ms);
            assert!((2.3..=4.2).contains(&spread), "p95 / p50 = {spread}");
        }
    }

    #[test]
    fn days_are_busier_than_nights_and_weekdays_busier_than_weekends() {
        let window = window(7);
        let profile = profile(3);
        let series = generate(&profile, &window, &[], &mut Random::new(3));
        let minute_of_peak = (profile.peak_hour * 60.0) as usize;
        let minute_of_trough = (minute_of_peak + 720) % 1440;
        let weekday_peak = mean(&series.request_rate[minute_of_peak - 30..minute_of_peak + 30]);
        let weekday_trough =
            mean(&series.request_rate[minute_of_trough - 30..minute_of_trough + 30]);
        let saturday_peak_index = 5 * 1440 + minute_of_peak;
        let saturday_peak =
            mean(&series.request_rate[saturday_peak_index - 30..saturday_peak_index + 30]);
        assert!(
            weekday_peak > 2.0 * weekday_trough,
            "{weekday_peak} vs {weekday_trough}"
        );
        assert!(
            weekday_peak > 1.3 * saturday_peak,
            "{weekday_peak} vs {saturday_peak}"
        );
    }

    #[test]
    fn an_error_anomaly_lifts_the_error_rate_over_its_minutes_only() {
        let window = window(1);
        let anomaly = Anomaly {
            start: 600,
            end: 640,
            disturbance: Disturbance::Errors {
                error_rate: 0.18,
                latency_factor: 2.0,
            },
        };
        let series = generate(&profile(5), &window, &[anomaly], &mut Random::new(5));
        assert!(
            series.error_rate[600..640]
                .iter()
                .all(|&value| (0.14..=0.23).contains(&value))
        );
        assert!(mean(&series.error_rate[540..600]) < 0.02);
        assert!(mean(&series.error_rate[640..700]) < 0.02);
    }
}
