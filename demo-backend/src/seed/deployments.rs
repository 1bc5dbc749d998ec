//! Release history: about one deploy per service and working day, in business hours, with
//! semantic versions that only go up, plus the stories' bad deploys and their rollbacks.
//!
//! Ordinary deployments do not disturb the metrics, and none lands near a planted anomaly, so the
//! only deploy an assistant can blame for a spike is the story's.

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Utc, Weekday};

use super::catalog::OrganizationBlueprint;
use super::random::Random;
use super::signals::Window;
use super::stories::{self, Story};
use crate::domain::kinds::{DeploymentStatus, Tier};

/// One row of `deployments`, without its identifiers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedDeployment {
    pub version: String,
    pub commit_sha: String,
    pub deployed_by: String,
    pub status: DeploymentStatus,
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one service's deployment history needs to know.
#[derive(Debug)]
pub(crate) struct ServiceHistory<'plan> {
    pub organization: &'static OrganizationBlueprint,
    pub tier: Tier,
    /// The story whose bad deploy hits this service, if any.
    pub story: Option<&'plan Story>,
    /// Times no ordinary deploy may start in: around the service's planted anomalies.
    pub quiet_periods: Vec<Range<DateTime<Utc>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    major: u32,
    minor: u32,
    patch: u32,
}

/// The user name CI deploys under.
const CI_USER: &str = "ci-bot";

/// What ordinary releases change, for their descriptions.
const CHANGES: [&str; 16] = [
    "dependency updates",
    "retry budget for downstream calls",
    "request ids in structured logs",
    "connection pool sized to the new instance type",
    "feature flag clean-up",
    "faster JSON serialisation",
    "cursor pagination on list endpoints",
    "timeouts aligned with the API gateway",
    "cache hit ratio metrics",
    "fix for a rare race in reconciliation",
    "runtime upgrade",
    "read replica routing for reports",
    "idempotency keys on write endpoints",
    "bulk endpoint for the admin tools",
    "translation updates",
    "OpenTelemetry tracing on outbound calls",
];

/// The deployments of one service over the window, oldest first.
pub(crate) fn history(
    history: &ServiceHistory<'_>,
    window: &Window,
    random: &mut Random,
) -> Vec<PlannedDeployment> {
    let mut quiet_periods = history.quiet_periods.clone();
    if let Some(story) = history.story {
        quiet_periods
            .push(story.deployed_at - TimeDelta::hours(3)..story.spike_end + TimeDelta::hours(3));
    }
    let times = release_times(history.tier, window, &quiet_periods, random);
    let Some(story) = history.story else {
        let first = Version {
            major: random.integer(1, 4) as u32,
            minor: random.integer(0, 30) as u32,
            patch: random.integer(0, 9) as u32,
        };
        let versions = versions_from(first, times.len(), random);
        return releases(&versions, &times, history.organization, true, random);
    };

    let (times_before, times_after): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = times
        .into_iter()
        .partition(|&time| time < story.deployed_at);
    // The releases before the story lead up to exactly the version the rollback returns to, and
    // none of them fails: that version must have been running. With no release before the story
    // in the window, that version was deployed before the window began.
    let versions_before = versions_up_to(
        Version::parse(story.rollback_version),
        times_before.len(),
        random,
    );
    let mut deployments = releases(
        &versions_before,
        &times_before,
        history.organization,
        false,
        random,
    );
    deployments.extend(story_deployments(story, history.organization, random));
    let versions_after = versions_from(
        Version::parse(story.bad_version).next_patch(),
        times_after.len(),
        random,
    );
    deployments.extend(releases(
        &versions_after,
        &times_after,
        history.organization,
        true,
        random,
    ));
    deployments
}

/// `count` versions, the first one `first`, each later one a patch or minor bump.
fn versions_from(first: Version, count: usize, random: &mut Random) -> Vec<Version> {
    let mut versions = Vec::with_capacity(count);
    let mut version = first;
    for _ in 0..count {
        versions.push(version);
        version = version.next(random);
    }
    versions
}

/// `count` rising versions, the last one `last`.
fn versions_up_to(last: Version, count: usize, random: &mut Random) -> Vec<Version> {
    let mut versions = Vec::with_capacity(count);
    let mut version = last;
    for _ in 0..count {
        versions.push(version);
        version = version.previous(random);
    }
    versions.reverse();
    versions
}

/// The story's bad deploy (rolled back) and the rollback itself.
fn story_deployments(
    story: &Story,
    organization: &OrganizationBlueprint,
    random: &mut Random,
) -> [PlannedDeployment; 2] {
    let responder = stories::story_responder(story.organization_slug).unwrap_or("ci-bot");
    let rollback_started = story.spike_end - TimeDelta::minutes(stories::ROLLBACK_MINUTES);
    [
        PlannedDeployment {
            version: story.bad_version.to_owned(),
            commit_sha: random.hex(40),
            deployed_by: CI_USER.to_owned(),
            status: DeploymentStatus::RolledBack,
            description: format!(
                "Release {}: {}",
                story.bad_version,
                stories::story_change(story.organization_slug)
            ),
            started_at: story.deployed_at,
            finished_at: Some(story.deployed_at + TimeDelta::minutes(2)),
        },
        PlannedDeployment {
            version: story.rollback_version.to_owned(),
            commit_sha: random.hex(40),
            deployed_by: organization.email(responder),
            status: DeploymentStatus::Succeeded,
            description: format!(
                "Rollback to {} after the error-rate spike of {}",
                story.rollback_version, story.bad_version
            ),
            started_at: rollback_started,
            finished_at: Some(story.spike_end),
        },
    ]
}

/// When ordinary releases start: most working days, once (twice now and then for tier 1), between
/// 09:00 and 17:30 UTC; never in a quiet period or in the last quarter hour of the window.
fn release_times(
    tier: Tier,
    window: &Window,
    quiet_periods: &[Range<DateTime<Utc>>],
    random: &mut Random,
) -> Vec<DateTime<Utc>> {
    let (daily_chance, second_release_chance) = match tier {
        Tier::Tier1 => (0.85, 0.2),
        Tier::Tier2 => (0.65, 0.05),
        Tier::Tier3 => (0.4, 0.0),
    };
    let latest = window.end - TimeDelta::minutes(15);
    let mut times = Vec::new();
    let mut day = window.start.date_naive();
    while day <= window.end.date_naive() {
        let is_working_day = !matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
        let releases = if !is_working_day || !random.chance(daily_chance) {
            0
        } else if random.chance(second_release_chance) {
            2
        } else {
            1
        };
        for _ in 0..releases {
            let minute_of_day = random.integer(9 * 60, 17 * 60 + 30);
            let time = day.and_time(NaiveTime::MIN).and_utc() + TimeDelta::minutes(minute_of_day);
            let is_quiet = quiet_periods.iter().any(|period| period.contains(&time));
            if time >= window.start && time <= latest && !is_quiet {
                times.push(time);
            }
        }
        day = day
            .succ_opt()
            .expect("dates stay far from the end of the calendar");
    }
    times.sort_unstable();
    times.dedup();
    times
}

/// Releases of `versions` at `times`. A few fail when `may_fail`; a failed version is never
/// reused.
fn releases(
    versions: &[Version],
    times: &[DateTime<Utc>],
    organization: &OrganizationBlueprint,
    may_fail: bool,
    random: &mut Random,
) -> Vec<PlannedDeployment> {
    let deployers = organization.responders();
    let mut deployments = Vec::with_capacity(times.len());
    for (&version, &started_at) in versions.iter().zip(times) {
        let failed = may_fail && random.chance(0.06);
        let change = random.pick(&CHANGES);
        let (status, description, minutes) = if failed {
            (
                DeploymentStatus::Failed,
                format!(
                    "Release {version}: {change}. Canary failed health checks; deployment aborted."
                ),
                random.integer(2, 6),
            )
        } else {
            (
                DeploymentStatus::Succeeded,
                format!("Release {version}: {change}"),
                random.integer(3, 12),
            )
        };
        let deployed_by = if random.chance(0.65) {
            CI_USER.to_owned()
        } else {
            let deployer = deployers[random.index(deployers.len())];
            organization.email(deployer)
        };
        deployments.push(PlannedDeployment {
            version: version.to_string(),
            commit_sha: random.hex(40),
            deployed_by,
            status,
            description,
            started_at,
            finished_at: Some(started_at + TimeDelta::minutes(minutes)),
        });
    }
    deployments
}

impl Version {
    /// Parses `v1.2.3`; the stories' versions are written by hand, so a bad one is a bug.
    fn parse(text: &str) -> Self {
        let numbers: Vec<u32> = text
            .trim_start_matches('v')
            .split('.')
            .map(|part| {
                part.parse()
                    .unwrap_or_else(|_| panic!("`{text}` is not a version like v1.2.3"))
            })
            .collect();
        let [major, minor, patch] = numbers[..] else {
            panic!("`{text}` is not a version like v1.2.3");
        };
        Self {
            major,
            minor,
            patch,
        }
    }

    fn next(self, random: &mut Random) -> Self {
        if random.chance(0.75) {
            return self.next_patch();
        }
        Self {
            minor: self.minor + 1,
            patch: 0,
            ..self
        }
    }

    fn next_patch(self) -> Self {
        Self {
            patch: self.patch + 1,
            ..self
        }
    }

    /// A plausible version released just before this one.
    fn previous(self, random: &mut Random) -> Self {
        if self.patch > 0 {
            return Self {
                patch: self.patch - 1,
                ..self
            };
        }
        if self.minor > 0 {
            return Self {
                minor: self.minor - 1,
                patch: random.integer(2, 7) as u32,
                ..self
            };
        }
        Self {
            major: self.major.saturating_sub(1),
            minor: random.integer(5, 12) as u32,
            patch: random.integer(2, 7) as u32,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::seed::SeedOptions;
    use crate::seed::catalog;

    fn window(days: u32) -> Window {
        Window::ending_at(Utc.with_ymd_and_hms(2025, 6, 13, 15, 0, 0).unwrap(), days)
    }

    #[test]
    fn versions_parse_print_and_step() {
        let version = Version::parse("v2.13.4");
        assert_eq!(version.to_string(), "v2.13.4");
        assert_eq!(version.next_patch().to_string(), "v2.13.5");
        let mut random = Random::new(1);
        let mut earlier = Version::parse("v1.0.0");
        for _ in 0..20 {
            let previous = earlier.previous(&mut random);
            assert!(previous < earlier, "{previous} !< {earlier}");
            earlier = previous;
        }
    }

    #[test]
    fn ordinary_releases_happen_on_working_days_in_business_hours_with_rising_versions() {
        let window = window(14);
        let history = ServiceHistory {
            organization: catalog::organization("acme"),
            tier: Tier::Tier1,
            story: None,
            quiet_periods: Vec::new(),
        };
        let deployments = self::history(&history, &window, &mut Random::new(9));
        assert!(
            (7..=14).contains(&deployments.len()),
            "{} deployments",
            deployments.len()
        );
        let mut previous: Option<Version> = None;
        for deployment in &deployments {
            let weekday = deployment.started_at.weekday();
            assert!(
                !matches!(weekday, Weekday::Sat | Weekday::Sun),
                "{deployment:?}"
            );
            let hour = deployment.started_at.time().format("%H").to_string();
            assert!(("09".."18").contains(&hour.as_str()), "{deployment:?}");
            assert_eq!(deployment.commit_sha.len(), 40);
            let version = Version::parse(&deployment.version);
            assert!(
                previous.is_none_or(|previous| previous < version),
                "{deployments:?}"
            );
            previous = Some(version);
        }
    }

    #[test]
    fn the_story_service_leads_up_to_the_rollback_version() {
        let options = SeedOptions {
            days: 14,
            ..SeedOptions::new(window(14).end)
        };
        let story = &stories::stories(&options)[0];
        let history = ServiceHistory {
            organization: catalog::organization("acme"),
            tier: Tier::Tier1,
            story: Some(story),
            quiet_periods: Vec::new(),
        };
        let deployments = self::history(&history, &window(14), &mut Random::new(4));
        let bad = deployments
            .iter()
            .position(|deployment| deployment.version == story.bad_version)
            .expect("the bad deploy");
        assert_eq!(deployments[bad].status, DeploymentStatus::RolledBack);
        assert_eq!(deployments[bad - 1].version, story.rollback_version);
        assert_eq!(deployments[bad - 1].status, DeploymentStatus::Succeeded);
        assert_eq!(deployments[bad + 1].version, story.rollback_version);
        assert_eq!(deployments[bad + 1].finished_at, Some(story.spike_end));
        assert_eq!(deployments[bad + 2].version, "v2.14.1");
        let around_the_story =
            story.deployed_at - TimeDelta::hours(3)..story.spike_end + TimeDelta::hours(3);
        let others_near = deployments
            .iter()
            .filter(|deployment| around_the_story.contains(&deployment.started_at))
            .count();
        assert_eq!(others_near, 2, "only the bad deploy and its rollback");
    }
}
