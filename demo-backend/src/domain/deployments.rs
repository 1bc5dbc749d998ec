//! Deployments of services: who shipped which version when, and how it went.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::kinds::DeploymentStatus;
use crate::domain::page::{Page, PageRequest, time_and_id_key};
use crate::domain::{DomainError, Tenant};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Deployment {
    pub id: Uuid,
    pub service_id: Uuid,
    pub service_name: String,
    pub version: String,
    pub commit_sha: String,
    pub deployed_by: String,
    pub status: DeploymentStatus,
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Narrows a deployment listing; `since`/`until` bound `started_at`.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub service_id: Option<Uuid>,
    pub status: Option<DeploymentStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Tenant {
    /// Deployments matching `filter`, newest first.
    pub async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, DomainError> {
        let (before_at, before_id) = page.before_time_and_id()?;
        let rows: Vec<Deployment> = sqlx::query_as(
            "SELECT d.id, d.service_id, s.name AS service_name, d.version, d.commit_sha, d.deployed_by,
                    d.status, d.description, d.started_at, d.finished_at
               FROM deployments d
               JOIN services s ON s.organization_id = d.organization_id AND s.id = d.service_id
              WHERE d.organization_id = $1
                AND (d.started_at, d.id) < ($2, $3)
                AND ($4::uuid IS NULL OR d.service_id = $4)
                AND ($5::deployment_status IS NULL OR d.status = $5)
                AND ($6::timestamptz IS NULL OR d.started_at >= $6)
                AND ($7::timestamptz IS NULL OR d.started_at < $7)
              ORDER BY d.started_at DESC, d.id DESC
              LIMIT $8",
        )
        .bind(self.organization_id())
        .bind(before_at)
        .bind(before_id)
        .bind(filter.service_id)
        .bind(filter.status)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page.fetch_limit())
        .fetch_all(&self.db)
        .await?;
        Ok(page.finish(rows, |deployment| {
            time_and_id_key(deployment.started_at, deployment.id)
        }))
    }
}
