//! The service catalog, and each service's current health derived from its latest samples,
//! firing alerts and open incidents.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::kinds::Tier;
use crate::domain::page::{Page, PageRequest};
use crate::domain::{DomainError, Tenant};

/// A service in the catalog with its current health.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Service {
    pub id: Uuid,
    /// Unique within the organisation, lowercase with dashes, e.g. `checkout-api`.
    pub name: String,
    pub team: String,
    pub tier: Tier,
    pub description: String,
    pub tags: Vec<String>,
    #[schema(value_type = Vec<ServiceLink>)]
    pub links: Json<Vec<ServiceLink>>,
    #[schema(value_type = Option<UserSummary>)]
    pub owner: Option<Json<UserSummary>>,
    pub created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    pub health: ServiceHealth,
}

/// A link from the catalog entry (runbook, dashboard, repository).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceLink {
    pub title: String,
    pub url: String,
}

/// Who someone is, as other resources refer to them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserSummary {
    pub id: Uuid,
    pub name: String,
    pub email: String,
}

/// A service's health now: `critical` with a firing critical alert or an open critical/high
/// incident, `degraded` with any firing alert or open incident, else `healthy`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct ServiceHealth {
    #[sqlx(try_from = "String")]
    pub status: HealthStatus,
    pub firing_alerts: i64,
    pub open_incidents: i64,
    /// Mean error ratio (0..1) over the latest five samples.
    pub error_rate: Option<f64>,
    /// Mean 95th percentile latency in milliseconds over the latest five samples.
    pub latency_p95_ms: Option<f64>,
    /// Mean requests per second over the latest five samples.
    pub request_rate: Option<f64>,
    /// Time of the latest sample the figures are based on.
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Critical,
}

impl TryFrom<String> for HealthStatus {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "healthy" => Ok(Self::Healthy),
            "degraded" => Ok(Self::Degraded),
            "critical" => Ok(Self::Critical),
            other => Err(format!("unknown health status {other}")),
        }
    }
}

/// Narrows a service listing; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    pub team: Option<String>,
    pub tier: Option<Tier>,
    pub tag: Option<String>,
    /// Part of the name, case-insensitive.
    pub name_contains: Option<String>,
}

/// One query for listing and for getting: the catalog row, its owner and its health.
const SELECT_SERVICES: &str = r#"
    SELECT s.id, s.name, s.team, s.tier, s.description, s.tags, s.links, s.created_at,
           CASE WHEN u.id IS NULL THEN NULL
                ELSE json_build_object('id', u.id, 'name', u.name, 'email', u.email) END AS owner,
           CASE WHEN a.critical > 0 OR i.severe > 0 THEN 'critical'
                WHEN a.firing > 0 OR i.open > 0 THEN 'degraded'
                ELSE 'healthy' END AS status,
           a.firing AS firing_alerts, i.open AS open_incidents,
           m.error_rate, m.latency_p95_ms, m.request_rate, m.as_of
      FROM services s
      LEFT JOIN users u ON u.organization_id = s.organization_id AND u.id = s.owner_id
      CROSS JOIN LATERAL (
          SELECT count(*) AS firing, count(*) FILTER (WHERE al.severity = 'critical') AS critical
            FROM alerts al
           WHERE al.organization_id = s.organization_id AND al.service_id = s.id AND al.state = 'firing'
      ) a
      CROSS JOIN LATERAL (
          SELECT count(*) AS open, count(*) FILTER (WHERE inc.severity IN ('critical', 'high')) AS severe
            FROM incident_services isv
            JOIN incidents inc ON inc.organization_id = isv.organization_id AND inc.id = isv.incident_id
           WHERE isv.organization_id = s.organization_id AND isv.service_id = s.id
             AND inc.status <> 'resolved'
      ) i
      CROSS JOIN LATERAL (
          -- The latest five samples of each series, read backwards along the primary key.
          SELECT avg(latest.value) FILTER (WHERE ms.name = 'error_rate') AS error_rate,
                 avg(latest.value) FILTER (WHERE ms.name = 'latency_p95_ms') AS latency_p95_ms,
                 avg(latest.value) FILTER (WHERE ms.name = 'request_rate') AS request_rate,
                 max(latest.ts) AS as_of
            FROM metric_series ms
           CROSS JOIN LATERAL (
               SELECT sample.value, sample.ts FROM metric_samples sample
                WHERE sample.series_id = ms.id ORDER BY sample.ts DESC LIMIT 5
           ) latest
           WHERE ms.organization_id = s.organization_id AND ms.service_id = s.id
             AND ms.name IN ('error_rate', 'latency_p95_ms', 'request_rate')
      ) m
"#;

impl Tenant {
    /// Services matching `filter`, ordered by name.
    pub async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: &PageRequest,
    ) -> Result<Page<Service>, DomainError> {
        let rows: Vec<Service> = sqlx::query_as(&format!(
            "{SELECT_SERVICES}
             WHERE s.organization_id = $1
               AND s.name > $2
               AND ($3::text IS NULL OR s.team = $3)
               AND ($4::service_tier IS NULL OR s.tier = $4)
               AND ($5::text IS NULL OR $5 = ANY (s.tags))
               AND ($6::text IS NULL OR strpos(lower(s.name), lower($6)) > 0)
             ORDER BY s.name
             LIMIT $7"
        ))
        .bind(self.organization_id())
        .bind(page.after_name())
        .bind(&filter.team)
        .bind(filter.tier)
        .bind(&filter.tag)
        .bind(&filter.name_contains)
        .bind(page.fetch_limit())
        .fetch_all(&self.db)
        .await?;
        Ok(page.finish(rows, |service| service.name.clone()))
    }

    /// One service by id.
    pub async fn service(&self, id: Uuid) -> Result<Service, DomainError> {
        sqlx::query_as(&format!(
            "{SELECT_SERVICES} WHERE s.organization_id = $1 AND s.id = $2"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no service with id {id}")))
    }

    /// One service by its unique name.
    pub async fn service_by_name(&self, name: &str) -> Result<Service, DomainError> {
        sqlx::query_as(&format!(
            "{SELECT_SERVICES} WHERE s.organization_id = $1 AND s.name = $2"
        ))
        .bind(self.organization_id())
        .bind(name)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no service named {name}")))
    }

    /// Fails with NotFound unless every id names a service of this organisation.
    pub(crate) async fn ensure_services_exist(&self, ids: &[Uuid]) -> Result<(), DomainError> {
        self.ensure_services_exist_on(&self.db, ids).await
    }

    /// The same check on a given connection, e.g. inside a transaction.
    pub(crate) async fn ensure_services_exist_on<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        ids: &[Uuid],
    ) -> Result<(), DomainError> {
        let found: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM services WHERE organization_id = $1 AND id = ANY ($2)",
        )
        .bind(self.organization_id())
        .bind(ids)
        .fetch_all(executor)
        .await?;
        match ids.iter().find(|id| !found.contains(id)) {
            Some(missing) => Err(DomainError::NotFound(format!(
                "no service with id {missing}"
            ))),
            None => Ok(()),
        }
    }
}
