//! Deterministic, realistic demo data for an empty database: two organisations with people, API
//! tokens, a service catalog, a week of per-minute metrics, monitors, the alerts those monitors
//! would have raised, deployments and incidents, including the stories an assistant should find.
//!
//! Everything is relative to [`SeedOptions::until`] and drawn from a PRNG seeded with
//! [`SeedOptions::random_seed`], so the same options always give the same rows (API tokens aside,
//! which are real secrets). The alerts are not invented: they are derived by evaluating every
//! monitor over the generated samples, so the metrics, alerts and incidents always agree.
//!
//! - `catalog`: the organisations, people, teams and services, written out by hand.
//! - `stories`: the planted scenarios (a bad deploy per organisation, open and past incidents).
//! - `signals`: the per-minute series of a service; `monitors`: rules and their evaluation.
//! - `plan`, `deployments`, `alerts`, `incidents`: the rows, built in memory.
//! - `write` and `copy`: bulk inserts, and `COPY` for the samples, in one transaction.

mod alerts;
mod catalog;
mod copy;
mod deployments;
mod incidents;
mod monitors;
mod plan;
mod random;
mod signals;
mod stories;
mod write;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool};

use crate::domain::Secret;
use crate::domain::kinds::{Role, STANDARD_METRICS};
use copy::SampleCopy;
use plan::{AlertRow, OrganizationPlan};
use random::Random;
use signals::Window;
use write::{RowCounts, SeriesIds};

pub use stories::{Story, stories};
pub use write::SERVICE_USER_HANDLE;

/// The seed's random seed unless told otherwise.
pub const DEFAULT_RANDOM_SEED: u64 = 0x5eed_0000_2024_0001;

/// Every table the seed writes, in no particular order; it gathers their planner statistics.
pub const SEEDED_TABLES: [&str; 13] = [
    "organizations",
    "users",
    "user_passwords",
    "api_tokens",
    "services",
    "metric_series",
    "metric_samples",
    "monitors",
    "alerts",
    "incidents",
    "incident_services",
    "incident_events",
    "deployments",
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedOptions {
    /// Multiplies the number of services (20 per organisation each); 1 to 100.
    pub scale: u32,
    /// How many days of per-minute metrics, ending at `until`; 1 to 30.
    pub days: u32,
    /// The end of the data; callers pass now, truncated to the minute. Everything is relative to it.
    pub until: DateTime<Utc>,
    /// The PRNG's seed: the same options give the same data.
    pub random_seed: u64,
}

/// What the seed wrote.
#[derive(Debug)]
pub struct SeedReport {
    pub organizations: Vec<SeededOrganization>,
    pub services: u64,
    pub metric_samples: u64,
    /// Rows written to all tables together, samples included.
    pub total_rows: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct SeededOrganization {
    pub slug: String,
    pub name: String,
    pub users: Vec<SeededUser>,
}

#[derive(Debug, Clone)]
pub struct SeededUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// The user's API token in plain text, with the highest scopes the role allows. It is shown
    /// once: only its hash is stored.
    pub token: Secret,
    /// The user's sign-in password in plain text, random like the token; only its Argon2id hash
    /// is stored.
    pub password: Secret,
}

impl SeedOptions {
    pub const MAXIMUM_SCALE: u32 = 100;
    pub const MAXIMUM_DAYS: u32 = 30;

    /// Scale 1, seven days ending at `until`, the default random seed.
    pub fn new(until: DateTime<Utc>) -> Self {
        Self {
            scale: 1,
            days: 7,
            until,
            random_seed: DEFAULT_RANDOM_SEED,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=Self::MAXIMUM_SCALE).contains(&self.scale) {
            bail!(
                "scale must be between 1 and {}, not {}",
                Self::MAXIMUM_SCALE,
                self.scale
            );
        }
        if !(1..=Self::MAXIMUM_DAYS).contains(&self.days) {
            bail!(
                "days must be between 1 and {}, not {}",
                Self::MAXIMUM_DAYS,
                self.days
            );
        }
        Ok(())
    }

    /// The time of the last sample: `until`, truncated to the minute.
    pub(crate) fn end_of_data(&self) -> DateTime<Utc> {
        let seconds_into_minute = TimeDelta::seconds(self.until.timestamp().rem_euclid(60))
            + TimeDelta::nanoseconds(i64::from(self.until.timestamp_subsec_nanos()));
        self.until - seconds_into_minute
    }
}

/// Fills an empty, migrated database with the demo data, in one transaction: all or nothing.
/// Then gathers the planner statistics of the tables it filled, so callers need no `ANALYZE`.
///
/// Refuses, naming them, when any organisation exists: the seed never deletes or modifies existing
/// data. Also refuses options out of range (scale 1 to 100, days 1 to 30).
#[tracing::instrument(skip_all, fields(scale = options.scale, days = options.days, until = %options.until))]
pub async fn seed(db: &PgPool, options: &SeedOptions) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    options.validate()?;
    let seed = options.random_seed;
    let window = Window::ending_at(options.end_of_data(), options.days);

    let mut transaction = db.begin().await.context("begin the seed transaction")?;
    refuse_unless_empty(&mut transaction).await?;

    let organizations = plan::build(options, &window);
    let mut counts = RowCounts::default();
    let token_created_at = window.end - TimeDelta::days(14);
    let seeded = write::organizations_users_and_tokens(
        &mut transaction,
        &organizations,
        seed,
        token_created_at,
        &mut counts,
    )
    .await?;
    write::service_users(
        &mut transaction,
        &organizations,
        seed,
        token_created_at,
        &mut counts,
    )
    .await?;
    write::services(&mut transaction, &organizations, &mut counts).await?;
    let series_ids = write::metric_series(&mut transaction, &organizations, &mut counts).await?;
    write::monitors(&mut transaction, &organizations, &mut counts).await?;
    let (metric_samples, alerts_by_organization) = write_samples_and_derive_alerts(
        &mut transaction,
        &organizations,
        &series_ids,
        &window,
        seed,
    )
    .await?;
    counts.metric_samples = metric_samples;
    counts.add(metric_samples);

    let mut all_alerts = Vec::new();
    let mut all_incidents = Vec::new();
    let mut all_events = Vec::new();
    for (organization, mut alerts) in organizations.iter().zip(alerts_by_organization) {
        let opened = incidents::open_planted_incidents(organization, &mut alerts, &window, seed)?;
        alerts::acknowledge_older_alerts(organization, &mut alerts, &window, seed);
        all_alerts.append(&mut alerts);
        all_incidents.extend(opened.incidents);
        all_events.extend(opened.events);
    }
    write::deployments(&mut transaction, &organizations, seed, &mut counts).await?;
    write::incidents(&mut transaction, &all_incidents, &mut counts).await?;
    write::alerts(&mut transaction, &all_alerts, &mut counts).await?;
    write::incident_events(&mut transaction, &all_events, &mut counts).await?;
    write::next_incident_numbers(&mut transaction, &organizations).await?;
    transaction.commit().await.context("commit the seed")?;
    // Fresh planner statistics for the tables just filled, as autovacuum would gather later:
    // query plans (and internal-mcp's cost limit) rely on them. Only the seeded tables: a bare
    // `ANALYZE` also visits the shared catalogues, which the database's owner may not analyze,
    // and PostgreSQL warns once for each of them.
    sqlx::query(&format!("ANALYZE {}", SEEDED_TABLES.join(", ")))
        .execute(db)
        .await
        .context("analyze the seeded tables")?;

    let report = SeedReport {
        organizations: seeded,
        services: counts.services,
        metric_samples: counts.metric_samples,
        total_rows: counts.total,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        services = report.services,
        metric_samples = report.metric_samples,
        alerts = all_alerts.len(),
        incidents = all_incidents.len(),
        total_rows = report.total_rows,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "seeded the demo data"
    );
    Ok(report)
}

/// Fails, naming them, when the database already has organisations. The lock makes a concurrent
/// seed wait and then see this one's organisations, instead of failing on a duplicate key.
async fn refuse_unless_empty(connection: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("LOCK TABLE organizations IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *connection)
        .await
        .context("lock the organizations table")?;
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT slug FROM organizations ORDER BY slug LIMIT 21")
            .fetch_all(&mut *connection)
            .await
            .context("look for existing organizations")?;
    if existing.is_empty() {
        return Ok(());
    }
    let mut names = existing
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if existing.len() > 20 {
        names.push_str(", ...");
    }
    bail!(
        "the database already holds organisations ({names}); the seed only fills an empty database, \
         so it changed nothing"
    )
}

/// Generates every service's series, one service at a time, streams them into `metric_samples`
/// and evaluates the service's monitors on them. Returns the number of samples and each
/// organisation's alerts.
async fn write_samples_and_derive_alerts(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    series_ids: &SeriesIds,
    window: &Window,
    seed: u64,
) -> anyhow::Result<(u64, Vec<Vec<AlertRow>>)> {
    copy::defer_sample_constraints(connection).await?;
    let mut copy = SampleCopy::start(connection, window).await?;
    let (samples, alerts_by_organization) =
        match stream_samples(&mut copy, organizations, series_ids, window, seed).await {
            Ok(alerts_by_organization) => (copy.finish().await?, alerts_by_organization),
            Err(error) => {
                copy.abort(&format!("{error:#}")).await;
                return Err(error);
            }
        };
    copy::restore_sample_constraints(connection).await?;
    Ok((samples, alerts_by_organization))
}

async fn stream_samples(
    copy: &mut SampleCopy<'_>,
    organizations: &[OrganizationPlan],
    series_ids: &SeriesIds,
    window: &Window,
    seed: u64,
) -> anyhow::Result<Vec<Vec<AlertRow>>> {
    let mut alerts_by_organization = Vec::with_capacity(organizations.len());
    for organization in organizations {
        let mut alerts = Vec::new();
        for service in &organization.services {
            let mut random = Random::derive(
                seed,
                &format!("signals/{}/{}", organization.blueprint.slug, service.name),
            );
            let series =
                signals::generate(&service.profile, window, &service.anomalies, &mut random);
            alerts.extend(alerts::derive(organization, service, &series, window, seed));
            for (metric, _, _) in STANDARD_METRICS {
                let series_id = series_ids.get(&(service.id, metric)).with_context(|| {
                    format!("no {metric} series was written for {}", service.name)
                })?;
                copy.write_series(organization.id, *series_id, series.metric(metric))
                    .await?;
            }
        }
        alerts_by_organization.push(alerts);
    }
    Ok(alerts_by_organization)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::kinds::{AlertState, IncidentStatus};

    /// Everything `seed` derives, without a database.
    fn derive_everything(
        options: &SeedOptions,
    ) -> Vec<(OrganizationPlan, Vec<AlertRow>, incidents::Incidents)> {
        let window = Window::ending_at(options.end_of_data(), options.days);
        plan::build(options, &window)
            .into_iter()
            .map(|organization| {
                let mut alerts = Vec::new();
                for service in &organization.services {
                    let mut random = Random::derive(
                        options.random_seed,
                        &format!("signals/{}/{}", organization.blueprint.slug, service.name),
                    );
                    let series = signals::generate(
                        &service.profile,
                        &window,
                        &service.anomalies,
                        &mut random,
                    );
                    alerts.extend(alerts::derive(
                        &organization,
                        service,
                        &series,
                        &window,
                        options.random_seed,
                    ));
                }
                let opened = incidents::open_planted_incidents(
                    &organization,
                    &mut alerts,
                    &window,
                    options.random_seed,
                )
                .expect("every planted anomaly raises its alert");
                alerts::acknowledge_older_alerts(
                    &organization,
                    &mut alerts,
                    &window,
                    options.random_seed,
                );
                (organization, alerts, opened)
            })
            .collect()
    }

    fn options(days: u32, random_seed: u64) -> SeedOptions {
        SeedOptions {
            days,
            random_seed,
            // A Thursday afternoon.
            ..SeedOptions::new(Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0).unwrap())
        }
    }

    #[test]
    fn every_planted_incident_finds_its_alert_whatever_the_seed_and_window() {
        for days in [1, 2, 3, 7] {
            for random_seed in 0..6 {
                for (organization, alerts, opened) in derive_everything(&options(days, random_seed))
                {
                    let statuses: Vec<IncidentStatus> = opened
                        .incidents
                        .iter()
                        .map(|incident| incident.status)
                        .collect();
                    let count = |status| statuses.iter().filter(|&&other| other == status).count();
                    assert_eq!(
                        count(IncidentStatus::Open),
                        1,
                        "{} {days} days",
                        organization.blueprint.slug
                    );
                    assert_eq!(count(IncidentStatus::Acknowledged), 1);
                    assert_eq!(count(IncidentStatus::Resolved), 4);
                    for incident in &opened.incidents {
                        let linked: Vec<&AlertRow> = alerts
                            .iter()
                            .filter(|alert| alert.incident_id == Some(incident.id))
                            .collect();
                        assert!(!linked.is_empty(), "{incident:?}");
                        let still_firing =
                            linked.iter().any(|alert| alert.state == AlertState::Firing);
                        assert_eq!(
                            still_firing,
                            incident.status != IncidentStatus::Resolved,
                            "{incident:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_noisy_monitor_fires_far_more_than_any_other() {
        for random_seed in 0..4 {
            for (organization, alerts, _) in derive_everything(&options(7, random_seed)) {
                let mut alerts_by_monitor: HashMap<Uuid, usize> = HashMap::new();
                for alert in &alerts {
                    *alerts_by_monitor.entry(alert.monitor_id).or_default() += 1;
                }
                let noisy = organization
                    .service(organization.blueprint.noisy_monitor_service)
                    .monitors
                    .iter()
                    .find(|monitor| monitor.rule.name.ends_with("traffic surge"))
                    .expect("the noisy monitor");
                let noisy_alerts = alerts_by_monitor.remove(&noisy.id).unwrap_or(0);
                let runner_up = alerts_by_monitor.values().copied().max().unwrap_or(0);
                assert!(noisy_alerts >= 7, "{noisy_alerts} alerts in a week");
                assert!(
                    noisy_alerts > 3 * runner_up,
                    "{noisy_alerts} vs {runner_up}"
                );
            }
        }
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let valid = options(7, 1);
        assert!(valid.validate().is_ok());
        for invalid in [
            SeedOptions { scale: 0, ..valid },
            SeedOptions {
                scale: 101,
                ..valid
            },
            SeedOptions { days: 0, ..valid },
            SeedOptions { days: 31, ..valid },
        ] {
            assert!(invalid.validate().is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn the_end_of_data_is_until_truncated_to_the_minute() {
        let until =
            Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 42).unwrap() + TimeDelta::milliseconds(250);
        let options = SeedOptions::new(until);
        assert_eq!(
            options.end_of_data(),
            Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0).unwrap()
        );
    }
}
