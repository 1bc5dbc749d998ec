//! Read access to investigations for pages (the web UI's Investigations page): a list per
//! organisation, newest first, and one investigation with its recorded steps. Every query names
//! the organisation, so one organisation never sees another's investigations.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Error;

/// An investigation as a list shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InvestigationSummary {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub incident_reference: String,
    pub incident_opened_at: DateTime<Utc>,
    pub services: Vec<String>,
    /// queued, running, completed, failed or skipped.
    pub status: String,
    /// Why it waits, was skipped or failed.
    pub status_reason: Option<String>,
    pub attempts: i32,
    /// none, planned, posted, found or disabled.
    pub note_status: String,
    pub mcp_calls: i32,
    /// Joins internal-mcp's audit rows: `credential_id LIKE '<correlation id>/%'`.
    pub correlation_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One investigation with its report and steps.
#[derive(Debug, Clone, Serialize)]
pub struct InvestigationDetail {
    #[serde(flatten)]
    pub summary: InvestigationSummary,
    /// The report (see `Report`) plus the note's outcome and text, once completed.
    pub report: Option<Value>,
    /// The last failed attempt's error.
    pub error: Option<String>,
    pub steps: Vec<RecordedStep>,
}

/// One recorded MCP call.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RecordedStep {
    /// What reports cite.
    pub id: i64,
    pub attempt: i32,
    pub name: String,
    pub tool: String,
    pub arguments: Value,
    /// ok, tool_error or transport_error.
    pub status: String,
    pub summary: String,
    pub result: Option<Value>,
    pub duration_ms: i32,
    pub created_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str =
    "id, incident_id, incident_reference, incident_opened_at, services, status, status_reason,
     attempts, note_status, mcp_calls, correlation_id, created_at, started_at, finished_at";

/// The organisation's investigations, newest first, at most `limit` (1 to 500).
pub async fn list_investigations(
    pool: &PgPool,
    organization_id: Uuid,
    limit: i64,
) -> Result<Vec<InvestigationSummary>, Error> {
    Ok(sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM investigations
          WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(organization_id)
    .bind(limit.clamp(1, 500))
    .fetch_all(pool)
    .await?)
}

/// One of the organisation's investigations, by its id or its incident's id; `None` when the
/// organisation has no such investigation.
pub async fn investigation(
    pool: &PgPool,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<InvestigationDetail>, Error> {
    let summary: Option<InvestigationSummary> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM investigations
          WHERE organization_id = $1 AND (id = $2 OR incident_id = $2)"
    ))
    .bind(organization_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(summary) = summary else {
        return Ok(None);
    };
    let (report, error): (Option<Value>, Option<String>) =
        sqlx::query_as("SELECT report, error FROM investigations WHERE id = $1")
            .bind(summary.id)
            .fetch_one(pool)
            .await?;
    let steps: Vec<RecordedStep> = sqlx::query_as(
        "SELECT id, attempt, name, tool, arguments, status, summary, result, duration_ms, created_at
           FROM investigation_steps WHERE investigation_id = $1 ORDER BY id",
    )
    .bind(summary.id)
    .fetch_all(pool)
    .await?;
    Ok(Some(InvestigationDetail {
        summary,
        report,
        error,
        steps,
    }))
}
