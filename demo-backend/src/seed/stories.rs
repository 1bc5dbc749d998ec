//! The scenarios the seed plants for an assistant to find: in each organisation a bad deploy that
//! spikes the error rate until it is rolled back, plus the incidents people are in the middle of
//! (one open, one acknowledged) and a few resolved ones from earlier in the window.

use chrono::{DateTime, TimeDelta, Utc};

use super::SeedOptions;
use super::signals::{Anomaly, Disturbance, Window};
use crate::domain::kinds::Severity;

/// A "bad deploy -> error-rate spike -> incident" story, with the times the seed gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Story {
    pub organization_slug: &'static str,
    /// The service that gets the bad deploy.
    pub service: &'static str,
    /// The version whose deployment (status `rolled_back`) causes the spike.
    pub bad_version: &'static str,
    /// When the bad deployment started (its `started_at`).
    pub deployed_at: DateTime<Utc>,
    /// The first minute of elevated errors: three minutes after the deploy.
    pub spike_start: DateTime<Utc>,
    /// The first minute back to normal, when the rollback deployment finished.
    pub spike_end: DateTime<Utc>,
    /// The version the rollback deployment (status `succeeded`) returns to.
    pub rollback_version: &'static str,
    /// The title of the incident opened for the spike.
    pub incident_title: &'static str,
}

/// The bad-deploy stories, one per organisation, with their times computed from `options`.
///
/// The deploy lands about two days before `until`; when the window is too short for that (fewer
/// than three days), about six hours before `until`.
pub fn stories(options: &SeedOptions) -> Vec<Story> {
    let window = Window::ending_at(options.end_of_data(), options.days);
    STORY_BLUEPRINTS
        .iter()
        .map(|blueprint| blueprint.story(&window))
        .collect()
}

/// An incident the seed plants: an anomaly on a service, the alert it raises and what people did
/// about it.
#[derive(Debug, Clone)]
pub(crate) struct PlannedIncident {
    pub organization_slug: &'static str,
    pub service: &'static str,
    /// The metric whose monitor raises the alert that opens the incident.
    pub metric: &'static str,
    pub anomaly: Anomaly,
    pub title: &'static str,
    pub summary: String,
    pub severity: Severity,
    /// The handle of the responder who opens, acknowledges and leads the incident.
    pub responder: &'static str,
    pub outcome: Outcome,
    pub notes: Vec<PlannedNote>,
}

/// How far an incident got by the end of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Open,
    Acknowledged,
    Resolved {
        /// Minutes between the end of the anomaly and the resolution.
        minutes_after_anomaly: i64,
        /// What the resolving responder wrote.
        resolution: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedNote {
    pub at: NoteTime,
    pub body: String,
}

/// When a note was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoteTime {
    AfterOpening { minutes: i64 },
    AfterAcknowledgement { minutes: i64 },
    At(DateTime<Utc>),
}

/// Everything the seed plants, stories first, for the window of `options`.
pub(crate) fn planned_incidents(window: &Window) -> Vec<PlannedIncident> {
    let mut planned: Vec<PlannedIncident> = STORY_BLUEPRINTS
        .iter()
        .map(|blueprint| blueprint.planned_incident(window))
        .collect();
    planned.extend(
        INCIDENT_BLUEPRINTS
            .iter()
            .map(|blueprint| blueprint.planned_incident(window)),
    );
    planned
}

/// One organisation's bad-deploy story before the window gives it times.
#[derive(Debug)]
struct StoryBlueprint {
    organization_slug: &'static str,
    service: &'static str,
    bad_version: &'static str,
    rollback_version: &'static str,
    incident_title: &'static str,
    /// What the bad version changed, for the deployment's description.
    change: &'static str,
    /// Where the deploy lands when the window has room: about two days before its end.
    minutes_before_end: i64,
    /// Where it lands in windows shorter than three days.
    minutes_before_end_in_short_windows: i64,
    spike_minutes: i64,
    error_rate: f64,
    latency_factor: f64,
    severity: Severity,
    responder: &'static str,
}

/// A planted incident other than a story.
#[derive(Debug)]
struct IncidentBlueprint {
    organization_slug: &'static str,
    service: &'static str,
    metric: &'static str,
    placement: Placement,
    disturbance: Disturbance,
    title: &'static str,
    summary: &'static str,
    severity: Severity,
    responder: &'static str,
    /// `None` while the incident is open or acknowledged at the end of the window.
    resolution: Option<(i64, &'static str)>,
    acknowledged: bool,
    notes: &'static [(NoteTime, &'static str)],
}

#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Starts at this share of the window and lasts `minutes`.
    ShareOfWindow { share: f64, minutes: usize },
    /// The last `minutes` of the window: still going at its end.
    Ending { minutes: usize },
}

/// Minutes between an alert firing and a responder opening an incident for it.
pub(crate) const MINUTES_TO_OPEN: i64 = 3;
/// Minutes between opening an incident and acknowledging it.
pub(crate) const MINUTES_TO_ACKNOWLEDGE: i64 = 4;
/// Minutes a rollback deployment takes; it finishes at the story's `spike_end`.
pub(crate) const ROLLBACK_MINUTES: i64 = 3;
/// The stories' minutes between the deploy and the first bad minute.
const MINUTES_FROM_DEPLOY_TO_SPIKE: i64 = 3;
/// Room the full-length placement needs before and after the deploy.
const STORY_MARGIN_MINUTES: i64 = 180;

impl StoryBlueprint {
    fn story(&self, window: &Window) -> Story {
        let window_minutes = window.minutes as i64;
        let minutes_before_end = if self.minutes_before_end + STORY_MARGIN_MINUTES <= window_minutes
        {
            self.minutes_before_end
        } else {
            self.minutes_before_end_in_short_windows
        };
        let deployed_at = window.end - TimeDelta::minutes(minutes_before_end);
        let spike_start = deployed_at + TimeDelta::minutes(MINUTES_FROM_DEPLOY_TO_SPIKE);
        Story {
            organization_slug: self.organization_slug,
            service: self.service,
            bad_version: self.bad_version,
            deployed_at,
            spike_start,
            spike_end: spike_start + TimeDelta::minutes(self.spike_minutes),
            rollback_version: self.rollback_version,
            incident_title: self.incident_title,
        }
    }

    fn planned_incident(&self, window: &Window) -> PlannedIncident {
        let story = self.story(window);
        let rollback_started = story.spike_end - TimeDelta::minutes(ROLLBACK_MINUTES);
        PlannedIncident {
            organization_slug: self.organization_slug,
            service: self.service,
            metric: "error_rate",
            anomaly: Anomaly {
                start: window.index_of(story.spike_start),
                end: window.index_of(story.spike_end),
                disturbance: Disturbance::Errors {
                    error_rate: self.error_rate,
                    latency_factor: self.latency_factor,
                },
            },
            title: self.incident_title,
            summary: format!(
                "Requests to {service} failed with HTTP 500s right after {bad} was deployed. \
                 Rolling back to {rollback} brought the error rate back to normal.",
                service = self.service,
                bad = self.bad_version,
                rollback = self.rollback_version,
            ),
            severity: self.severity,
            responder: self.responder,
            outcome: Outcome::Resolved {
                minutes_after_anomaly: 12,
                resolution: format!(
                    "Error rate back to baseline after the rollback to {}. {} needs a fix before it is released again.",
                    self.rollback_version, self.bad_version
                ),
            },
            notes: vec![
                PlannedNote {
                    at: NoteTime::AfterAcknowledgement { minutes: 3 },
                    body: format!(
                        "Error rate on {} jumped right after deploy of {}",
                        self.service, self.bad_version
                    ),
                },
                PlannedNote {
                    at: NoteTime::At(rollback_started),
                    body: format!("Rolling back to {}", self.rollback_version),
                },
            ],
        }
    }
}

impl IncidentBlueprint {
    fn planned_incident(&self, window: &Window) -> PlannedIncident {
        let (start, end) = match self.placement {
            Placement::ShareOfWindow { share, minutes } => {
                let start = (share * window.minutes as f64) as usize;
                (start, (start + minutes).min(window.minutes))
            }
            Placement::Ending { minutes } => (window.minutes - minutes, window.minutes),
        };
        let outcome = match (self.resolution, self.acknowledged) {
            (Some((minutes_after_anomaly, resolution)), _) => Outcome::Resolved {
                minutes_after_anomaly,
                resolution: resolution.to_owned(),
            },
            (None, true) => Outcome::Acknowledged,
            (None, false) => Outcome::Open,
        };
        PlannedIncident {
            organization_slug: self.organization_slug,
            service: self.service,
            metric: self.metric,
            anomaly: Anomaly {
                start,
                end,
                disturbance: self.disturbance,
            },
            title: self.title,
            summary: self.summary.to_owned(),
            severity: self.severity,
            responder: self.responder,
            outcome,
            notes: self
                .notes
                .iter()
                .map(|&(at, body)| PlannedNote {
                    at,
                    body: body.to_owned(),
                })
                .collect(),
        }
    }
}

/// What the stories' bad deployments changed, by organisation, for their descriptions.
pub(crate) fn story_change(organization_slug: &str) -> &'static str {
    STORY_BLUEPRINTS
        .iter()
        .find(|blueprint| blueprint.organization_slug == organization_slug)
        .map_or("", |blueprint| blueprint.change)
}

/// The handle of the responder who handles an organisation's story (and runs its rollback).
pub(crate) fn story_responder(organization_slug: &str) -> Option<&'static str> {
    STORY_BLUEPRINTS
        .iter()
        .find(|blueprint| blueprint.organization_slug == organization_slug)
        .map(|blueprint| blueprint.responder)
}

const STORY_BLUEPRINTS: [StoryBlueprint; 2] = [
    StoryBlueprint {
        organization_slug: "acme",
        service: "checkout-api",
        bad_version: "v2.14.0",
        rollback_version: "v2.13.4",
        incident_title: "Checkout failing after v2.14.0 deploy",
        change: "promotion-code validation moved to the new rules engine",
        minutes_before_end: 2 * 1440,
        minutes_before_end_in_short_windows: 6 * 60,
        spike_minutes: 40,
        error_rate: 0.18,
        latency_factor: 2.0,
        severity: Severity::Critical,
        responder: "marcus",
    },
    StoryBlueprint {
        organization_slug: "globex",
        service: "shipment-tracker",
        bad_version: "v3.8.0",
        rollback_version: "v3.7.2",
        incident_title: "Tracking updates failing after v3.8.0 deploy",
        change: "carrier event parsing switched to the schema registry",
        minutes_before_end: 2 * 1440 + 135,
        minutes_before_end_in_short_windows: 7 * 60 + 40,
        spike_minutes: 36,
        error_rate: 0.15,
        latency_factor: 2.1,
        severity: Severity::High,
        responder: "mei",
    },
];

const INCIDENT_BLUEPRINTS: [IncidentBlueprint; 10] = [
    IncidentBlueprint {
        organization_slug: "acme",
        service: "payments-gateway",
        metric: "error_rate",
        placement: Placement::ShareOfWindow {
            share: 0.18,
            minutes: 28,
        },
        disturbance: Disturbance::Errors {
            error_rate: 0.11,
            latency_factor: 1.6,
        },
        title: "Card payments failing at the processor",
        summary: "Card authorisations timed out at the card processor; the gateway failed over to the secondary processor.",
        severity: Severity::High,
        responder: "priya",
        resolution: Some((
            9,
            "Authorisations succeed again on the secondary processor. Failing back once the processor confirms the fix.",
        )),
        acknowledged: true,
        notes: &[
            (
                NoteTime::AfterAcknowledgement { minutes: 3 },
                "The processor's status page confirms elevated timeouts in eu-west",
            ),
            (
                NoteTime::AfterAcknowledgement { minutes: 8 },
                "Failing over to the secondary processor",
            ),
        ],
    },
    IncidentBlueprint {
        organization_slug: "acme",
        service: "cart-service",
        metric: "latency_p95_ms",
        placement: Placement::ShareOfWindow {
            share: 0.42,
            minutes: 45,
        },
        disturbance: Disturbance::SlowResponses { factor: 2.9 },
        title: "Slow carts after Redis node replacement",
        summary: "A Redis node was replaced during maintenance and came back with a cold cache; cart reads fell through to the database.",
        severity: Severity::Medium,
        responder: "marcus",
        resolution: Some((6, "Latency back to normal once the cache was warm.")),
        acknowledged: true,
        notes: &[
            (
                NoteTime::AfterAcknowledgement { minutes: 4 },
                "Cache hit ratio dropped from 97% to 61% after the Redis node was replaced",
            ),
            (
                NoteTime::AfterAcknowledgement { minutes: 20 },
                "Warmed the cache from the replica; latency recovering",
            ),
        ],
    },
    IncidentBlueprint {
        organization_slug: "acme",
        service: "catalog-service",
        metric: "cpu_utilization",
        placement: Placement::ShareOfWindow {
            share: 0.6,
            minutes: 50,
        },
        disturbance: Disturbance::CpuSaturation { level: 0.96 },
        title: "Catalog indexer saturating CPU",
        summary: "The nightly catalog re-index ran outside its window after a cron change and starved the API of CPU.",
        severity: Severity::Low,
        responder: "tomas",
        resolution: Some((
            10,
            "Re-index paused and moved back to 02:00 UTC; CPU back to normal.",
        )),
        acknowledged: true,
        notes: &[(
            NoteTime::AfterAcknowledgement { minutes: 5 },
            "The nightly re-index started outside its window after yesterday's cron change; pausing it",
        )],
    },
    IncidentBlueprint {
        organization_slug: "acme",
        service: "search-api",
        metric: "latency_p95_ms",
        placement: Placement::Ending { minutes: 20 },
        disturbance: Disturbance::SlowResponses { factor: 3.4 },
        title: "Search results slow to load",
        summary: "Search latency has been climbing since the last index merge.",
        severity: Severity::High,
        responder: "tomas",
        resolution: None,
        acknowledged: false,
        notes: &[(
            NoteTime::AfterOpening { minutes: 2 },
            "Search latency climbing since the last index merge; checking the slow query log",
        )],
    },
    IncidentBlueprint {
        organization_slug: "acme",
        service: "inventory-service",
        metric: "cpu_utilization",
        placement: Placement::Ending { minutes: 150 },
        disturbance: Disturbance::CpuSaturation { level: 0.97 },
        title: "Inventory service CPU saturated by stock re-sync",
        summary: "The stock re-sync triggered by the warehouse import keeps every inventory worker busy.",
        severity: Severity::Medium,
        responder: "priya",
        resolution: None,
        acknowledged: true,
        notes: &[(
            NoteTime::AfterAcknowledgement { minutes: 6 },
            "The stock re-sync from the warehouse import is pinning the workers; scaling out from 4 to 6 replicas",
        )],
    },
    IncidentBlueprint {
        organization_slug: "globex",
        service: "warehouse-api",
        metric: "error_rate",
        placement: Placement::ShareOfWindow {
            share: 0.22,
            minutes: 30,
        },
        disturbance: Disturbance::Errors {
            error_rate: 0.09,
            latency_factor: 1.4,
        },
        title: "Warehouse scans rejected after certificate rotation",
        summary: "Handheld scanners rejected the rotated TLS certificate, whose chain lacked the intermediate.",
        severity: Severity::High,
        responder: "jonas",
        resolution: Some((
            8,
            "Scans accepted again. Adding a chain check to the certificate rotation runbook.",
        )),
        acknowledged: true,
        notes: &[
            (
                NoteTime::AfterAcknowledgement { minutes: 4 },
                "Scanners reject the new TLS certificate; the intermediate is missing from the chain",
            ),
            (
                NoteTime::AfterAcknowledgement { minutes: 12 },
                "Re-issued the certificate with the full chain",
            ),
        ],
    },
    IncidentBlueprint {
        organization_slug: "globex",
        service: "eta-predictor",
        metric: "latency_p95_ms",
        placement: Placement::ShareOfWindow {
            share: 0.47,
            minutes: 40,
        },
        disturbance: Disturbance::SlowResponses { factor: 2.8 },
        title: "ETA predictions slow after model refresh",
        summary: "The weekly model refresh shipped a model three times larger, and inference slowed down.",
        severity: Severity::Medium,
        responder: "raj",
        resolution: Some((
            7,
            "Back on last week's model; the larger one goes back to the data science team.",
        )),
        acknowledged: true,
        notes: &[
            (
                NoteTime::AfterAcknowledgement { minutes: 5 },
                "The refreshed model is three times larger and no longer fits the CPU budget",
            ),
            (
                NoteTime::AfterAcknowledgement { minutes: 15 },
                "Rolled the model back to last week's version",
            ),
        ],
    },
    IncidentBlueprint {
        organization_slug: "globex",
        service: "billing-service",
        metric: "cpu_utilization",
        placement: Placement::ShareOfWindow {
            share: 0.63,
            minutes: 45,
        },
        disturbance: Disturbance::CpuSaturation { level: 0.95 },
        title: "Invoice batch saturating billing CPU",
        summary: "The invoice batch ran on the API nodes instead of the batch pool.",
        severity: Severity::Low,
        responder: "jonas",
        resolution: Some((
            12,
            "Batch moved back to the batch pool; API nodes idle again.",
        )),
        acknowledged: true,
        notes: &[(
            NoteTime::AfterAcknowledgement { minutes: 4 },
            "The invoice batch was scheduled on the API nodes instead of the batch pool",
        )],
    },
    IncidentBlueprint {
        organization_slug: "globex",
        service: "route-planner",
        metric: "latency_p95_ms",
        placement: Placement::Ending { minutes: 25 },
        disturbance: Disturbance::SlowResponses { factor: 3.0 },
        title: "Route planning requests timing out",
        summary: "Re-planning requests from drivers are slow and some time out.",
        severity: Severity::High,
        responder: "mei",
        resolution: None,
        acknowledged: false,
        notes: &[(
            NoteTime::AfterOpening { minutes: 2 },
            "Re-planning requests are queueing behind the optimisation run; investigating",
        )],
    },
    IncidentBlueprint {
        organization_slug: "globex",
        service: "carrier-gateway",
        metric: "error_rate",
        placement: Placement::Ending { minutes: 95 },
        disturbance: Disturbance::Errors {
            error_rate: 0.085,
            latency_factor: 1.5,
        },
        title: "Partner carrier API returning 503s",
        summary: "NordFreight's handover API answers 503 for about a third of parcels.",
        severity: Severity::High,
        responder: "raj",
        resolution: None,
        acknowledged: true,
        notes: &[
            (
                NoteTime::AfterAcknowledgement { minutes: 5 },
                "NordFreight's API answers 503 for a third of handovers; their status page shows degraded service",
            ),
            (
                NoteTime::AfterAcknowledgement { minutes: 30 },
                "Queueing handovers for retry; no parcels lost so far",
            ),
        ],
    },
];

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn options(days: u32) -> SeedOptions {
        SeedOptions {
            days,
            ..SeedOptions::new(Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0).unwrap())
        }
    }

    #[test]
    fn stories_fit_in_every_window() {
        for days in 1..=30 {
            let options = options(days);
            let window_start = options.until - TimeDelta::days(i64::from(days));
            for story in stories(&options) {
                assert!(
                    story.deployed_at - TimeDelta::hours(1) > window_start,
                    "{days} days: {story:?}"
                );
                assert!(
                    story.spike_end + TimeDelta::minutes(30) < options.until,
                    "{days} days: {story:?}"
                );
                assert!(
                    story.deployed_at < story.spike_start && story.spike_start < story.spike_end
                );
                let minutes = (story.spike_end - story.spike_start).num_minutes();
                assert!((30..=45).contains(&minutes));
            }
        }
    }

    #[test]
    fn stories_land_two_days_back_or_six_hours_back_in_short_windows() {
        let week = stories(&options(7));
        assert_eq!(week[0].organization_slug, "acme");
        assert_eq!(week[0].deployed_at, options(7).until - TimeDelta::days(2));
        let day = stories(&options(1));
        assert_eq!(day[0].deployed_at, options(1).until - TimeDelta::hours(6));
    }

    #[test]
    fn planted_incidents_fit_in_every_window() {
        for days in 1..=30 {
            let options = options(days);
            let window = Window::ending_at(options.end_of_data(), days);
            let planned = planned_incidents(&window);
            for incident in &planned {
                assert!(incident.anomaly.start >= 60, "{incident:?}");
                assert!(
                    incident.anomaly.start + 20 <= incident.anomaly.end,
                    "{incident:?}"
                );
                assert!(incident.anomaly.end <= window.minutes);
                if let Outcome::Resolved {
                    minutes_after_anomaly,
                    ..
                } = incident.outcome
                {
                    assert!(
                        incident.anomaly.end + (minutes_after_anomaly as usize) < window.minutes
                    );
                }
            }
            for organization in ["acme", "globex"] {
                let services: Vec<&str> = planned
                    .iter()
                    .filter(|incident| incident.organization_slug == organization)
                    .map(|incident| incident.service)
                    .collect();
                let mut distinct = services.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(
                    distinct.len(),
                    services.len(),
                    "one planted incident per service"
                );
            }
        }
    }
}
