//! Alerts raised by monitors: listing, and acknowledging them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::kinds::{AlertState, Severity};
use crate::domain::page::{Page, PageRequest, time_and_id_key};
use crate::domain::{DomainError, Tenant};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Alert {
    pub id: Uuid,
    pub monitor_id: Uuid,
    pub monitor_name: String,
    pub service_id: Uuid,
    pub service_name: String,
    pub state: AlertState,
    pub severity: Severity,
    pub summary: String,
    #[schema(value_type = Object)]
    pub labels: Json<serde_json::Value>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
    /// The incident this alert is linked to, if any.
    pub incident_id: Option<Uuid>,
}

/// Narrows an alert listing; every field is optional. `since`/`until` bound `started_at`.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub severity: Option<Severity>,
    pub service_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

pub(crate) const SELECT_ALERTS: &str = "
    SELECT a.id, a.monitor_id, m.name AS monitor_name, a.service_id, s.name AS service_name,
           a.state, a.severity, a.summary, a.labels, a.started_at, a.resolved_at,
           a.acknowledged_at, a.acknowledged_by, a.incident_id
      FROM alerts a
      JOIN monitors m ON m.organization_id = a.organization_id AND m.id = a.monitor_id
      JOIN services s ON s.organization_id = a.organization_id AND s.id = a.service_id";

impl Tenant {
    /// Alerts matching `filter`, newest first.
    pub async fn list_alerts(
        &self,
        filter: &AlertFilter,
        page: &PageRequest,
    ) -> Result<Page<Alert>, DomainError> {
        let (before_at, before_id) = page.before_time_and_id()?;
        let rows: Vec<Alert> = sqlx::query_as(&format!(
            "{SELECT_ALERTS}
             WHERE a.organization_id = $1
               AND (a.started_at, a.id) < ($2, $3)
               AND ($4::alert_state IS NULL OR a.state = $4)
               AND ($5::severity IS NULL OR a.severity = $5)
               AND ($6::uuid IS NULL OR a.service_id = $6)
               AND ($7::timestamptz IS NULL OR a.started_at >= $7)
               AND ($8::timestamptz IS NULL OR a.started_at < $8)
             ORDER BY a.started_at DESC, a.id DESC
             LIMIT $9"
        ))
        .bind(self.organization_id())
        .bind(before_at)
        .bind(before_id)
        .bind(filter.state)
        .bind(filter.severity)
        .bind(filter.service_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page.fetch_limit())
        .fetch_all(&self.db)
        .await?;
        Ok(page.finish(rows, |alert| time_and_id_key(alert.started_at, alert.id)))
    }

    pub async fn alert(&self, id: Uuid) -> Result<Alert, DomainError> {
        sqlx::query_as(&format!(
            "{SELECT_ALERTS} WHERE a.organization_id = $1 AND a.id = $2"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no alert with id {id}")))
    }

    /// Acknowledges, as the acting user, those of `alert_ids` that are alerts of the service and
    /// still firing and unacknowledged; returns the ids acknowledged. The others (resolved since,
    /// already acknowledged, another service's) are left as they are, so a caller that planned
    /// the change never acts on alerts it did not show.
    pub async fn acknowledge_service_alerts(
        &self,
        service_id: Uuid,
        alert_ids: &[Uuid],
    ) -> Result<Vec<Uuid>, DomainError> {
        self.ensure_services_exist(&[service_id]).await?;
        let ids = sqlx::query_scalar(
            "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $3
              WHERE organization_id = $1 AND service_id = $2 AND id = ANY ($4)
                AND state = 'firing' AND acknowledged_at IS NULL
              RETURNING id",
        )
        .bind(self.organization_id())
        .bind(service_id)
        .bind(self.actor_id())
        .bind(alert_ids)
        .fetch_all(&self.db)
        .await?;
        Ok(ids)
    }
}
