//! The seed's rows held in memory before they are written: organisations, people, services with
//! their monitors, anomalies and deployments, alerts and incidents. Only the metric samples are
//! never held here; they are generated and streamed one service at a time.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::SeedOptions;
use super::catalog::{self, OrganizationBlueprint, ServiceBlueprint};
use super::deployments::{self, PlannedDeployment, ServiceHistory};
use super::monitors::{self, MonitorRule};
use super::random::{Random, identifier};
use super::signals::{Anomaly, ServiceProfile, Window};
use super::stories::{self, PlannedIncident};
use crate::domain::kinds::{AlertState, IncidentStatus, Role, Severity, Tier};

/// One organisation and everything in it except alerts and incidents, which are derived later.
#[derive(Debug)]
pub(crate) struct OrganizationPlan {
    pub id: Uuid,
    pub blueprint: &'static OrganizationBlueprint,
    pub created_at: DateTime<Utc>,
    pub users: Vec<UserPlan>,
    pub services: Vec<ServicePlan>,
    /// The incidents planted in this organisation; their anomalies are also on the services.
    pub planned_incidents: Vec<PlannedIncident>,
}

#[derive(Debug)]
pub(crate) struct UserPlan {
    pub id: Uuid,
    pub handle: &'static str,
    pub email: String,
    pub name: &'static str,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct ServicePlan {
    pub id: Uuid,
    pub name: String,
    pub team: &'static str,
    pub tier: Tier,
    pub description: String,
    pub tags: Vec<String>,
    pub links: serde_json::Value,
    pub owner_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub profile: ServiceProfile,
    pub monitors: Vec<MonitorPlan>,
    /// The planted anomalies, as indices into the window.
    pub anomalies: Vec<Anomaly>,
    pub deployments: Vec<PlannedDeployment>,
}

#[derive(Debug)]
pub(crate) struct MonitorPlan {
    pub id: Uuid,
    pub rule: MonitorRule,
    pub created_at: DateTime<Utc>,
}

/// One row of `alerts`.
#[derive(Debug, Clone)]
pub(crate) struct AlertRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub monitor_id: Uuid,
    pub service_id: Uuid,
    /// The monitor's metric, to match alerts with planted incidents.
    pub metric: &'static str,
    pub state: AlertState,
    pub severity: Severity,
    pub summary: String,
    /// A JSON object, written as `jsonb`.
    pub labels: String,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
    pub incident_id: Option<Uuid>,
}

/// One row of `incidents`.
#[derive(Debug, Clone)]
pub(crate) struct IncidentRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub number: i32,
    pub title: String,
    pub summary: String,
    pub severity: Severity,
    pub status: IncidentStatus,
    pub commander_id: Option<Uuid>,
    pub created_by: Uuid,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The service the incident is about, for `incident_services`.
    pub service_id: Uuid,
}

/// One row of `incident_events`.
#[derive(Debug, Clone)]
pub(crate) struct IncidentEventRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub incident_id: Uuid,
    pub at: DateTime<Utc>,
    /// One of opened, acknowledged, resolved, note, alert_linked.
    pub kind: &'static str,
    pub author_id: Option<Uuid>,
    pub body: String,
}

impl OrganizationPlan {
    pub(crate) fn user(&self, handle: &str) -> &UserPlan {
        self.users
            .iter()
            .find(|user| user.handle == handle)
            .unwrap_or_else(|| panic!("{} has no user {handle}", self.blueprint.slug))
    }

    pub(crate) fn service(&self, name: &str) -> &ServicePlan {
        self.services
            .iter()
            .find(|service| service.name == name)
            .unwrap_or_else(|| panic!("{} has no service {name}", self.blueprint.slug))
    }

    /// The people who act on alerts and incidents: responders, then admins.
    pub(crate) fn responder_ids(&self) -> Vec<Uuid> {
        self.blueprint
            .responders()
            .into_iter()
            .map(|handle| self.user(handle).id)
            .collect()
    }
}

/// Plans every organisation of the catalog for `options`.
pub(crate) fn build(options: &SeedOptions, window: &Window) -> Vec<OrganizationPlan> {
    let stories = stories::stories(options);
    let planned_incidents = stories::planned_incidents(window);
    catalog::ORGANIZATIONS
        .iter()
        .map(|blueprint| {
            let planned_here: Vec<PlannedIncident> = planned_incidents
                .iter()
                .filter(|planned| planned.organization_slug == blueprint.slug)
                .cloned()
                .collect();
            build_organization(blueprint, options, window, &stories, planned_here)
        })
        .collect()
}

fn build_organization(
    blueprint: &'static OrganizationBlueprint,
    options: &SeedOptions,
    window: &Window,
    stories: &[stories::Story],
    planned_incidents: Vec<PlannedIncident>,
) -> OrganizationPlan {
    let seed = options.random_seed;
    let slug = blueprint.slug;
    let created_at = window.end - TimeDelta::days(400);
    let users: Vec<UserPlan> = blueprint
        .users
        .iter()
        .zip(0..)
        .map(|(user, position)| UserPlan {
            id: identifier(seed, &format!("user/{slug}/{}", user.handle)),
            handle: user.handle,
            email: blueprint.email(user.handle),
            name: user.name,
            role: user.role,
            created_at: created_at + TimeDelta::days(3 * position),
        })
        .collect();
    let mut organization = OrganizationPlan {
        id: identifier(seed, &format!("organization/{slug}")),
        blueprint,
        created_at,
        users,
        services: Vec::new(),
        planned_incidents,
    };

    for variant in 1..=options.scale {
        for (position, service) in blueprint.services.iter().enumerate() {
            let planned = ServiceVariant {
                blueprint: service,
                variant,
                position: (variant as usize - 1) * blueprint.services.len() + position,
            };
            let service_plan = planned.build(&organization, options, window, stories);
            organization.services.push(service_plan);
        }
    }
    organization
}

/// One copy of a catalog service: variant 1 is the service itself, later ones are numbered cells
/// (`search-api-2`) that exist at larger scales.
#[derive(Debug, Clone, Copy)]
struct ServiceVariant {
    blueprint: &'static ServiceBlueprint,
    variant: u32,
    /// Where it comes in the organisation's list, for staggered creation dates.
    position: usize,
}

impl ServiceVariant {
    fn name(&self) -> String {
        if self.variant == 1 {
            return self.blueprint.name.to_owned();
        }
        format!("{}-{}", self.blueprint.name, self.variant)
    }

    fn build(
        &self,
        organization: &OrganizationPlan,
        options: &SeedOptions,
        window: &Window,
        stories: &[stories::Story],
    ) -> ServicePlan {
        let seed = options.random_seed;
        let blueprint = organization.blueprint;
        let slug = blueprint.slug;
        let name = self.name();
        let is_original = self.variant == 1;
        let profile = ServiceProfile::draw(
            &mut Random::derive(seed, &format!("profile/{slug}/{name}")),
            self.blueprint.tier,
            blueprint.traffic,
        );
        let created_at = organization.created_at
            + TimeDelta::days(30)
            + TimeDelta::hours(7 * self.position as i64);

        let mut rules = monitors::standard_rules(&name, &profile);
        if is_original && name == blueprint.noisy_monitor_service {
            rules.push(monitors::noisy_rule(&name, &profile));
        }
        let monitors = rules
            .into_iter()
            .map(|rule| MonitorPlan {
                id: identifier(seed, &format!("monitor/{slug}/{name}/{}", rule.name)),
                rule,
                created_at: created_at + TimeDelta::days(2),
            })
            .collect();

        let anomalies: Vec<Anomaly> = if is_original {
            organization
                .planned_incidents
                .iter()
                .filter(|planned| planned.service == name)
                .map(|planned| planned.anomaly)
                .collect()
        } else {
            Vec::new()
        };
        let story = stories
            .iter()
            .find(|story| is_original && story.organization_slug == slug && story.service == name);
        let history = ServiceHistory {
            organization: blueprint,
            tier: self.blueprint.tier,
            story,
            quiet_periods: anomalies
                .iter()
                .map(|anomaly| {
                    window.time_of(anomaly.start) - TimeDelta::hours(2)
                        ..window.time_of(anomaly.end) + TimeDelta::hours(1)
                })
                .collect(),
        };
        let deployments = deployments::history(
            &history,
            window,
            &mut Random::derive(seed, &format!("deployments/{slug}/{name}")),
        );

        let mut tags: Vec<String> = self
            .blueprint
            .tags
            .iter()
            .map(|&tag| tag.to_owned())
            .collect();
        let description = if is_original {
            self.blueprint.description.to_owned()
        } else {
            tags.push(format!("cell-{}", self.variant));
            format!(
                "{} Cell {} of the regional rollout.",
                self.blueprint.description, self.variant
            )
        };
        ServicePlan {
            id: identifier(seed, &format!("service/{slug}/{name}")),
            links: blueprint.service_links(self.blueprint.team, &name),
            team: self.blueprint.team,
            tier: self.blueprint.tier,
            description,
            tags,
            owner_id: organization
                .user(blueprint.team(self.blueprint.team).lead)
                .id,
            created_at,
            profile,
            monitors,
            anomalies,
            deployments,
            name,
        }
    }
}
