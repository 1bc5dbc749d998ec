//! Writes the planned rows: one `INSERT ... SELECT FROM UNNEST(...)` per table, each column bound
//! as one array, so a table costs one round trip whatever its number of rows.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::plan::{AlertRow, IncidentEventRow, IncidentRow, OrganizationPlan};
use super::random::identifier;
use super::{SeededOrganization, SeededUser};
use crate::domain::kinds::{
    AlertState, Comparison, DeploymentStatus, IncidentStatus, Role, STANDARD_METRICS, Scope,
    Severity, Tier,
};
use crate::domain::{Secret, passwords, tokens};

/// Rows written so far, for the report.
#[derive(Debug, Default)]
pub(crate) struct RowCounts {
    pub services: u64,
    pub metric_samples: u64,
    /// Every row in every table, samples included.
    pub total: u64,
}

impl RowCounts {
    /// Counts `rows` more rows of any table in the total.
    pub(crate) fn add(&mut self, rows: u64) {
        self.total += rows;
    }
}

/// `metric_series.id` by service and metric name.
pub(crate) type SeriesIds = HashMap<(Uuid, &'static str), i64>;

/// The e-mail handle of each organisation's service user, `assistant@<domain>`.
pub const SERVICE_USER_HANDLE: &str = "assistant";

/// Writes each organisation's service user: the identity the product's own assistant acts as
/// when it works unprompted (internal-host's AgenticOps investigations). Its role is responder,
/// the most the assistant may be granted (it annotates incidents); the assistant's credentials
/// name a lower role unless its policy needs more. It has no password and no API token, so nobody
/// can sign in as it or call the REST API with it; its id is drawn from the seed like every id.
pub(crate) async fn service_users(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    seed: u64,
    created_at: DateTime<Utc>,
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, organization_id, email, name, role, created_at)
         SELECT id, organization_id, email, 'Assistant (service account)', 'responder', $4
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS service (id, organization_id, email)",
    )
    .bind(
        organizations
            .iter()
            .map(|organization| {
                identifier(
                    seed,
                    &format!("service-user/{}", organization.blueprint.slug),
                )
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        organizations
            .iter()
            .map(|organization| organization.id)
            .collect::<Vec<_>>(),
    )
    .bind(
        organizations
            .iter()
            .map(|organization| format!("{SERVICE_USER_HANDLE}@{}", organization.blueprint.domain))
            .collect::<Vec<_>>(),
    )
    .bind(created_at)
    .execute(&mut *connection)
    .await
    .context("insert service users")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes organisations, users, one password and one API token per user; returns what the report
/// shows, including each token's and password's secret.
pub(crate) async fn organizations_users_and_tokens(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    seed: u64,
    created_at: DateTime<Utc>,
    counts: &mut RowCounts,
) -> anyhow::Result<Vec<SeededOrganization>> {
    let inserted = sqlx::query(
        "INSERT INTO organizations (id, slug, name, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])",
    )
    .bind(
        organizations
            .iter()
            .map(|organization| organization.id)
            .collect::<Vec<_>>(),
    )
    .bind(
        organizations
            .iter()
            .map(|organization| organization.blueprint.slug)
            .collect::<Vec<_>>(),
    )
    .bind(
        organizations
            .iter()
            .map(|organization| organization.blueprint.name)
            .collect::<Vec<_>>(),
    )
    .bind(
        organizations
            .iter()
            .map(|organization| organization.created_at)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *connection)
    .await
    .context("insert organizations")?;
    counts.add(inserted.rows_affected());

    let users: Vec<(Uuid, &super::plan::UserPlan)> = organizations
        .iter()
        .flat_map(|organization| {
            organization
                .users
                .iter()
                .map(move |user| (organization.id, user))
        })
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO users (id, organization_id, email, name, role, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::user_role[], $6::timestamptz[])",
    )
    .bind(users.iter().map(|(_, user)| user.id).collect::<Vec<_>>())
    .bind(users.iter().map(|(organization_id, _)| *organization_id).collect::<Vec<_>>())
    .bind(users.iter().map(|(_, user)| user.email.as_str()).collect::<Vec<_>>())
    .bind(users.iter().map(|(_, user)| user.name).collect::<Vec<_>>())
    .bind(users.iter().map(|(_, user)| user.role).collect::<Vec<Role>>())
    .bind(users.iter().map(|(_, user)| user.created_at).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert users")?;
    counts.add(inserted.rows_affected());

    // Tokens are the one random thing: a secret must never be reproducible from the seed.
    let generated: Vec<tokens::GeneratedToken> = users.iter().map(|_| tokens::generate()).collect();
    let scopes: Vec<String> = users
        .iter()
        .map(|(_, user)| {
            let highest = Scope::highest_for(user.role);
            Scope::ALL
                .iter()
                .filter(|&&scope| scope <= highest)
                .map(|scope| scope.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (id, organization_id, user_id, name, token_hash, token_prefix, scopes, created_at)
         SELECT id, organization_id, user_id, name, token_hash, token_prefix, string_to_array(scopes, ','), created_at
           FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::timestamptz[])
             AS token (id, organization_id, user_id, name, token_hash, token_prefix, scopes, created_at)",
    )
    .bind(users.iter().map(|(_, user)| identifier(seed, &format!("api-token/{}", user.id))).collect::<Vec<_>>())
    .bind(users.iter().map(|(organization_id, _)| *organization_id).collect::<Vec<_>>())
    .bind(users.iter().map(|(_, user)| user.id).collect::<Vec<_>>())
    .bind(users.iter().map(|_| "Personal token (demo seed)").collect::<Vec<_>>())
    .bind(generated.iter().map(|token| token.hash.to_vec()).collect::<Vec<_>>())
    .bind(generated.iter().map(|token| token.display_prefix.as_str()).collect::<Vec<_>>())
    .bind(&scopes)
    .bind(users.iter().map(|_| created_at).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert api tokens")?;
    counts.add(inserted.rows_affected());

    // Passwords are random too, and hashed with Argon2id off the async runtime (it is slow on
    // purpose).
    let passwords: Vec<Secret> = users.iter().map(|_| passwords::generate()).collect();
    let to_hash: Vec<Secret> = passwords.clone();
    let password_hashes: Vec<String> = tokio::task::spawn_blocking(move || {
        to_hash
            .iter()
            .map(|password| passwords::hash(password.expose()))
            .collect()
    })
    .await
    .context("hash passwords")?;
    let inserted = sqlx::query(
        "INSERT INTO user_passwords (organization_id, user_id, password_hash, updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])",
    )
    .bind(
        users
            .iter()
            .map(|(organization_id, _)| *organization_id)
            .collect::<Vec<_>>(),
    )
    .bind(users.iter().map(|(_, user)| user.id).collect::<Vec<_>>())
    .bind(&password_hashes)
    .bind(users.iter().map(|_| created_at).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert user passwords")?;
    counts.add(inserted.rows_affected());
    let mut passwords_by_user: HashMap<Uuid, Secret> = users
        .iter()
        .map(|(_, user)| user.id)
        .zip(passwords)
        .collect();

    let mut tokens_by_user: HashMap<Uuid, tokens::GeneratedToken> = users
        .iter()
        .map(|(_, user)| user.id)
        .zip(generated)
        .collect();
    let seeded = organizations
        .iter()
        .map(|organization| SeededOrganization {
            slug: organization.blueprint.slug.to_owned(),
            name: organization.blueprint.name.to_owned(),
            users: organization
                .users
                .iter()
                .map(|user| SeededUser {
                    email: user.email.clone(),
                    name: user.name.to_owned(),
                    role: user.role,
                    token: tokens_by_user
                        .remove(&user.id)
                        .expect("every user got a token")
                        .secret,
                    password: passwords_by_user
                        .remove(&user.id)
                        .expect("every user got a password"),
                })
                .collect(),
        })
        .collect();
    Ok(seeded)
}

/// Writes the service catalog.
pub(crate) async fn services(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let services: Vec<(Uuid, &super::plan::ServicePlan)> = organizations
        .iter()
        .flat_map(|organization| {
            organization
                .services
                .iter()
                .map(move |service| (organization.id, service))
        })
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO services (id, organization_id, name, team, tier, description, tags, links, owner_id, created_at)
         SELECT id, organization_id, name, team, tier, description, string_to_array(tags, ','), links::jsonb,
                owner_id, created_at
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::service_tier[], $6::text[], $7::text[],
                       $8::text[], $9::uuid[], $10::timestamptz[])
             AS service (id, organization_id, name, team, tier, description, tags, links, owner_id, created_at)",
    )
    .bind(services.iter().map(|(_, service)| service.id).collect::<Vec<_>>())
    .bind(services.iter().map(|(organization_id, _)| *organization_id).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.name.as_str()).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.team).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.tier).collect::<Vec<Tier>>())
    .bind(services.iter().map(|(_, service)| service.description.as_str()).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.tags.join(",")).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.links.to_string()).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.owner_id).collect::<Vec<_>>())
    .bind(services.iter().map(|(_, service)| service.created_at).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert services")?;
    counts.services += inserted.rows_affected();
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes the five standard series of every service and returns their identifiers.
pub(crate) async fn metric_series(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    counts: &mut RowCounts,
) -> anyhow::Result<SeriesIds> {
    let mut organization_ids = Vec::new();
    let mut service_ids = Vec::new();
    let mut names = Vec::new();
    let mut units = Vec::new();
    let mut descriptions = Vec::new();
    for organization in organizations {
        for service in &organization.services {
            for (name, unit, description) in STANDARD_METRICS {
                organization_ids.push(organization.id);
                service_ids.push(service.id);
                names.push(name);
                units.push(unit);
                descriptions.push(description);
            }
        }
    }
    let rows: Vec<(i64, Uuid, String)> = sqlx::query_as(
        "INSERT INTO metric_series (organization_id, service_id, name, unit, description)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
         RETURNING id, service_id, name",
    )
    .bind(&organization_ids)
    .bind(&service_ids)
    .bind(&names)
    .bind(&units)
    .bind(&descriptions)
    .fetch_all(&mut *connection)
    .await
    .context("insert metric series")?;
    counts.add(rows.len() as u64);

    let mut ids = SeriesIds::with_capacity(rows.len());
    for (id, service_id, name) in rows {
        let (standard_name, _, _) = STANDARD_METRICS
            .iter()
            .find(|(standard_name, _, _)| *standard_name == name)
            .context("the database returned a metric series the seed did not write")?;
        ids.insert((service_id, standard_name), id);
    }
    Ok(ids)
}

/// Writes every service's monitors.
pub(crate) async fn monitors(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    let mut organization_ids = Vec::new();
    let mut service_ids = Vec::new();
    let mut names = Vec::new();
    let mut metrics = Vec::new();
    let mut comparisons: Vec<Comparison> = Vec::new();
    let mut thresholds = Vec::new();
    let mut for_minutes = Vec::new();
    let mut severities: Vec<Severity> = Vec::new();
    let mut created_ats = Vec::new();
    for organization in organizations {
        for service in &organization.services {
            for monitor in &service.monitors {
                ids.push(monitor.id);
                organization_ids.push(organization.id);
                service_ids.push(service.id);
                names.push(monitor.rule.name.as_str());
                metrics.push(monitor.rule.metric);
                comparisons.push(monitor.rule.comparison);
                thresholds.push(monitor.rule.threshold);
                for_minutes.push(
                    i32::try_from(monitor.rule.for_minutes)
                        .context("for_minutes fits an integer")?,
                );
                severities.push(monitor.rule.severity);
                created_ats.push(monitor.created_at);
            }
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO monitors (id, organization_id, service_id, name, metric, comparison, threshold, for_minutes,
                               severity, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::comparison[],
                              $7::float8[], $8::int4[], $9::severity[], $10::timestamptz[])",
    )
    .bind(&ids)
    .bind(&organization_ids)
    .bind(&service_ids)
    .bind(&names)
    .bind(&metrics)
    .bind(&comparisons)
    .bind(&thresholds)
    .bind(&for_minutes)
    .bind(&severities)
    .bind(&created_ats)
    .execute(&mut *connection)
    .await
    .context("insert monitors")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes every service's deployments; identifiers follow the service and the position.
pub(crate) async fn deployments(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
    seed: u64,
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    let mut organization_ids = Vec::new();
    let mut service_ids = Vec::new();
    let mut versions = Vec::new();
    let mut commit_shas = Vec::new();
    let mut deployed_bys = Vec::new();
    let mut statuses: Vec<DeploymentStatus> = Vec::new();
    let mut descriptions = Vec::new();
    let mut started_ats = Vec::new();
    let mut finished_ats = Vec::new();
    for organization in organizations {
        for service in &organization.services {
            for (position, deployment) in service.deployments.iter().enumerate() {
                ids.push(identifier(
                    seed,
                    &format!("deployment/{}/{position}", service.id),
                ));
                organization_ids.push(organization.id);
                service_ids.push(service.id);
                versions.push(deployment.version.as_str());
                commit_shas.push(deployment.commit_sha.as_str());
                deployed_bys.push(deployment.deployed_by.as_str());
                statuses.push(deployment.status);
                descriptions.push(deployment.description.as_str());
                started_ats.push(deployment.started_at);
                finished_ats.push(deployment.finished_at);
            }
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO deployments (id, organization_id, service_id, version, commit_sha, deployed_by, status,
                                  description, started_at, finished_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                              $7::deployment_status[], $8::text[], $9::timestamptz[], $10::timestamptz[])",
    )
    .bind(&ids)
    .bind(&organization_ids)
    .bind(&service_ids)
    .bind(&versions)
    .bind(&commit_shas)
    .bind(&deployed_bys)
    .bind(&statuses)
    .bind(&descriptions)
    .bind(&started_ats)
    .bind(&finished_ats)
    .execute(&mut *connection)
    .await
    .context("insert deployments")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes incidents and the services they affect.
pub(crate) async fn incidents(
    connection: &mut PgConnection,
    incidents: &[IncidentRow],
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO incidents (id, organization_id, number, title, summary, severity, status, commander_id,
                                created_by, opened_at, acknowledged_at, resolved_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::text[], $6::severity[],
                              $7::incident_status[], $8::uuid[], $9::uuid[], $10::timestamptz[],
                              $11::timestamptz[], $12::timestamptz[])",
    )
    .bind(incidents.iter().map(|incident| incident.id).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.organization_id).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.number).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.title.as_str()).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.summary.as_str()).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.severity).collect::<Vec<Severity>>())
    .bind(incidents.iter().map(|incident| incident.status).collect::<Vec<IncidentStatus>>())
    .bind(incidents.iter().map(|incident| incident.commander_id).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.created_by).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.opened_at).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.acknowledged_at).collect::<Vec<_>>())
    .bind(incidents.iter().map(|incident| incident.resolved_at).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert incidents")?;
    counts.add(inserted.rows_affected());

    let inserted = sqlx::query(
        "INSERT INTO incident_services (organization_id, incident_id, service_id)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[])",
    )
    .bind(
        incidents
            .iter()
            .map(|incident| incident.organization_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        incidents
            .iter()
            .map(|incident| incident.id)
            .collect::<Vec<_>>(),
    )
    .bind(
        incidents
            .iter()
            .map(|incident| incident.service_id)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *connection)
    .await
    .context("insert incident services")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes alerts; the incidents they link to must be written first.
pub(crate) async fn alerts(
    connection: &mut PgConnection,
    alerts: &[AlertRow],
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO alerts (id, organization_id, monitor_id, service_id, state, severity, summary, labels,
                             started_at, resolved_at, acknowledged_at, acknowledged_by, incident_id)
         SELECT id, organization_id, monitor_id, service_id, state, severity, summary, labels::jsonb,
                started_at, resolved_at, acknowledged_at, acknowledged_by, incident_id
           FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::alert_state[], $6::severity[],
                       $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
                       $12::uuid[], $13::uuid[])
             AS alert (id, organization_id, monitor_id, service_id, state, severity, summary, labels,
                       started_at, resolved_at, acknowledged_at, acknowledged_by, incident_id)",
    )
    .bind(alerts.iter().map(|alert| alert.id).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.organization_id).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.monitor_id).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.service_id).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.state).collect::<Vec<AlertState>>())
    .bind(alerts.iter().map(|alert| alert.severity).collect::<Vec<Severity>>())
    .bind(alerts.iter().map(|alert| alert.summary.as_str()).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.labels.as_str()).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.started_at).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.resolved_at).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.acknowledged_at).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.acknowledged_by).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.incident_id).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert alerts")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Writes the incidents' timelines.
pub(crate) async fn incident_events(
    connection: &mut PgConnection,
    events: &[IncidentEventRow],
    counts: &mut RowCounts,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO incident_events (id, organization_id, incident_id, at, kind, author_id, body)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[], $6::uuid[],
                              $7::text[])",
    )
    .bind(events.iter().map(|event| event.id).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.organization_id).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.incident_id).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.at).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.kind).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.author_id).collect::<Vec<_>>())
    .bind(events.iter().map(|event| event.body.as_str()).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("insert incident events")?;
    counts.add(inserted.rows_affected());
    Ok(())
}

/// Points each organisation's incident counter past its highest incident number.
pub(crate) async fn next_incident_numbers(
    connection: &mut PgConnection,
    organizations: &[OrganizationPlan],
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE organizations
            SET next_incident_number = coalesce(
                    (SELECT max(number) FROM incidents WHERE incidents.organization_id = organizations.id), 0) + 1
          WHERE id = ANY($1)",
    )
    .bind(organizations.iter().map(|organization| organization.id).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .context("set the next incident numbers")?;
    Ok(())
}
