//! The alert rules of each service, and their evaluation over the generated series: the seed's
//! alerts are what these monitors would have raised, minute by minute.

use crate::domain::kinds::{Comparison, Severity};

use super::signals::ServiceProfile;

/// One monitor as the seed writes it, before it gets an identifier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorRule {
    pub name: String,
    pub metric: &'static str,
    pub comparison: Comparison,
    pub threshold: f64,
    /// Minutes the condition must hold, in a row, before the monitor fires.
    pub for_minutes: usize,
    pub severity: Severity,
}

/// One stretch of time a monitor fired, as indices into the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Firing {
    /// The minute the condition had held for `for_minutes` in a row.
    pub started: usize,
    /// The first minute the condition no longer held; `None` when it still held at the end.
    pub resolved: Option<usize>,
}

/// The monitors every service has: errors, slowness and CPU.
pub(crate) fn standard_rules(service_name: &str, profile: &ServiceProfile) -> Vec<MonitorRule> {
    vec![
        MonitorRule {
            name: format!("{service_name} error rate"),
            metric: "error_rate",
            comparison: Comparison::Above,
            threshold: 0.05,
            for_minutes: 5,
            severity: Severity::High,
        },
        MonitorRule {
            name: format!("{service_name} p95 latency"),
            metric: "latency_p95_ms",
            comparison: Comparison::Above,
            threshold: round_for_people(2.0 * profile.peak_latency_p95_ms()),
            for_minutes: 10,
            severity: Severity::Medium,
        },
        MonitorRule {
            name: format!("{service_name} CPU saturation"),
            metric: "cpu_utilization",
            comparison: Comparison::Above,
            threshold: 0.9,
            for_minutes: 15,
            severity: Severity::Low,
        },
    ]
}

/// A monitor someone set just under the service's usual daily peak of traffic, so it fires on most
/// weekdays: the clear winner of any "noisiest alert rules" report.
pub(crate) fn noisy_rule(service_name: &str, profile: &ServiceProfile) -> MonitorRule {
    MonitorRule {
        name: format!("{service_name} traffic surge"),
        metric: "request_rate",
        comparison: Comparison::Above,
        threshold: round_for_people(0.95 * profile.peak_request_rate),
        for_minutes: 3,
        severity: Severity::Low,
    }
}

impl MonitorRule {
    /// Whether `value` breaks the rule.
    fn is_breached_by(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }

    /// The alert summary, e.g. "error_rate above 0.05 on checkout-api".
    pub(crate) fn summary(&self, service_name: &str) -> String {
        let comparison = match self.comparison {
            Comparison::Above => "above",
            Comparison::Below => "below",
        };
        format!(
            "{} {comparison} {} on {service_name}",
            self.metric, self.threshold
        )
    }

    /// When the rule fires over `values` (one a minute): once the condition has held `for_minutes`
    /// minutes in a row, until the first minute it no longer holds.
    pub(crate) fn evaluate(&self, values: &[f64]) -> Vec<Firing> {
        let mut firings = Vec::new();
        let mut minutes_in_breach = 0;
        let mut firing_since: Option<usize> = None;
        for (index, &value) in values.iter().enumerate() {
            if !self.is_breached_by(value) {
                minutes_in_breach = 0;
                if let Some(started) = firing_since.take() {
                    firings.push(Firing {
                        started,
                        resolved: Some(index),
                    });
                }
                continue;
            }
            minutes_in_breach += 1;
            if firing_since.is_none() && minutes_in_breach >= self.for_minutes {
                firing_since = Some(index);
            }
        }
        if let Some(started) = firing_since {
            firings.push(Firing {
                started,
                resolved: None,
            });
        }
        firings
    }
}

/// Rounds a threshold to two significant digits, as a person typing it in would.
fn round_for_people(value: f64) -> f64 {
    if value <= 0.0 {
        return value;
    }
    let magnitude = 10f64.powi(value.log10().floor() as i32 - 1);
    let rounded = (value / magnitude).round() * magnitude;
    // Undo the binary noise of the multiplication, so 380 prints as 380 and not 380.00000000000006.
    let decimals = (-value.log10().floor() + 1.0).max(0.0) as i32;
    let scale = 10f64.powi(decimals);
    (rounded * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(threshold: f64, for_minutes: usize) -> MonitorRule {
        MonitorRule {
            name: "test".to_owned(),
            metric: "error_rate",
            comparison: Comparison::Above,
            threshold,
            for_minutes,
            severity: Severity::High,
        }
    }

    fn check(values: &[f64], for_minutes: usize, expected: &[(usize, Option<usize>)]) {
        let firings: Vec<(usize, Option<usize>)> = rule(0.5, for_minutes)
            .evaluate(values)
            .into_iter()
            .map(|firing| (firing.started, firing.resolved))
            .collect();
        assert_eq!(
            firings, expected,
            "values {values:?}, for {for_minutes} minutes"
        );
    }

    #[test]
    fn monitors_fire_after_for_minutes_and_resolve_when_the_condition_stops() {
        check(&[0.0, 0.0, 0.0], 1, &[]);
        check(&[0.0, 1.0, 0.0], 1, &[(1, Some(2))]);
        check(&[0.0, 1.0, 1.0, 0.0], 3, &[]);
        check(&[0.0, 1.0, 1.0, 1.0, 1.0, 0.0], 3, &[(3, Some(5))]);
        check(&[1.0, 1.0, 0.0, 1.0, 1.0], 2, &[(1, Some(2)), (4, None)]);
        check(&[1.0, 1.0, 1.0], 1, &[(0, None)]);
        // Exactly at the threshold is not above it.
        check(&[0.5, 0.5, 0.5], 1, &[]);
    }

    #[test]
    fn below_rules_fire_under_the_threshold() {
        let mut below = rule(10.0, 2);
        below.comparison = Comparison::Below;
        let firings = below.evaluate(&[20.0, 5.0, 4.0, 3.0, 20.0]);
        assert_eq!(
            firings,
            vec![Firing {
                started: 2,
                resolved: Some(4)
            }]
        );
    }

    #[test]
    fn thresholds_are_round_numbers() {
        assert_eq!(round_for_people(383.7), 380.0);
        assert_eq!(round_for_people(1234.0), 1200.0);
        assert_eq!(round_for_people(47.2), 47.0);
        assert_eq!(round_for_people(7.84), 7.8);
        assert_eq!(
            rule(0.05, 5).summary("checkout-api"),
            "error_rate above 0.05 on checkout-api"
        );
    }
}
