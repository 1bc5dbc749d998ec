//! Monitors (alert rules): listing them and silencing one for a while.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::kinds::{Comparison, Severity};
use crate::domain::{DomainError, Tenant};

/// The longest a monitor may be silenced in one go.
pub const MAX_SILENCE: Duration = Duration::days(7);

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Monitor {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    /// The metric series name the rule watches, e.g. `error_rate`.
    pub metric: String,
    pub comparison: Comparison,
    pub threshold: f64,
    /// Minutes the condition must hold before an alert fires.
    pub for_minutes: i32,
    pub severity: Severity,
    pub enabled: bool,
    pub silenced_until: Option<DateTime<Utc>>,
}

const SELECT_MONITORS: &str =
    "SELECT id, service_id, name, metric, comparison, threshold, for_minutes,
                                      severity, enabled, silenced_until
                                 FROM monitors";

impl Tenant {
    /// The monitors of a service, by name.
    pub async fn monitors(&self, service_id: Uuid) -> Result<Vec<Monitor>, DomainError> {
        self.ensure_services_exist(&[service_id]).await?;
        let monitors = sqlx::query_as(&format!(
            "{SELECT_MONITORS} WHERE organization_id = $1 AND service_id = $2 ORDER BY name"
        ))
        .bind(self.organization_id())
        .bind(service_id)
        .fetch_all(&self.db)
        .await?;
        Ok(monitors)
    }

    pub async fn monitor(&self, id: Uuid) -> Result<Monitor, DomainError> {
        sqlx::query_as(&format!(
            "{SELECT_MONITORS} WHERE organization_id = $1 AND id = $2"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no monitor with id {id}")))
    }

    /// Silences a monitor for `duration` from now (at most [`MAX_SILENCE`]).
    pub async fn silence_monitor(
        &self,
        id: Uuid,
        duration: Duration,
    ) -> Result<Monitor, DomainError> {
        if duration <= Duration::zero() || duration > MAX_SILENCE {
            return Err(DomainError::invalid(
                "duration",
                "must be more than zero and at most 7 days",
            ));
        }
        sqlx::query_as(
            "UPDATE monitors SET silenced_until = now() + make_interval(secs => $3)
              WHERE organization_id = $1 AND id = $2
             RETURNING id, service_id, name, metric, comparison, threshold, for_minutes,
                       severity, enabled, silenced_until",
        )
        .bind(self.organization_id())
        .bind(id)
        .bind(duration.num_seconds() as f64)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no monitor with id {id}")))
    }
}
