//! The investigations' job table: enqueueing, claiming under a lease with `FOR UPDATE SKIP
//! LOCKED`, the rate limits and the daily budget (decided while the organisation's budget row is
//! locked, so two workers cannot both spend its last unit), heartbeats, recorded steps fenced by
//! the lease, and the end of a run (completed, retried with backoff, or failed with its reason).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::InvestigationLimits;
use crate::error::Error;

/// An incident as discovery saw it.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveredIncident {
    pub id: Uuid,
    pub reference: String,
    pub opened_at: DateTime<Utc>,
    pub services: Vec<String>,
}

/// An investigation this worker holds the lease of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ClaimedInvestigation {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub incident_id: Uuid,
    pub incident_reference: String,
    pub correlation_id: Uuid,
    pub attempts: i32,
}

/// What one attempt to claim did.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nothing is due.
    Empty,
    Claimed(ClaimedInvestigation),
    /// Another row was decided without a run (deferred by a rate limit, skipped by the budget,
    /// or failed after its last attempt); there may be more to claim.
    Decided,
}

/// One recorded MCP call.
#[derive(Debug)]
pub(crate) struct StepRecord<'a> {
    pub attempt: i32,
    pub name: &'a str,
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub status: &'a str,
    pub summary: &'a str,
    pub result: Option<&'a Value>,
    pub duration: Duration,
}

#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    organization_id: Uuid,
    services: Vec<String>,
    status: String,
    attempts: i32,
    max_attempts: i32,
    error: Option<String>,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Adds the incident's investigation unless it exists; true when this call added it.
pub(crate) async fn enqueue(
    pool: &PgPool,
    organization_id: Uuid,
    incident: &DiscoveredIncident,
    max_attempts: u32,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO investigations
             (id, organization_id, incident_id, incident_reference, incident_opened_at, services,
              correlation_id, status, max_attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8)
         ON CONFLICT (incident_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(incident.id)
    .bind(&incident.reference)
    .bind(incident.opened_at)
    .bind(&incident.services)
    .bind(Uuid::new_v4())
    .bind(i32::try_from(max_attempts).unwrap_or(3))
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The organisation's discovery cursor, created at `initial` the first time.
pub(crate) async fn cursor(
    pool: &PgPool,
    organization_id: Uuid,
    initial: DateTime<Utc>,
) -> Result<DateTime<Utc>, Error> {
    sqlx::query(
        "INSERT INTO discovery_cursors (organization_id, since) VALUES ($1, $2)
         ON CONFLICT (organization_id) DO NOTHING",
    )
    .bind(organization_id)
    .bind(initial)
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT since FROM discovery_cursors WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Moves the cursor forward to the newest opening seen, never past the database's clock (an
/// incident stamped in the future must not hide the ones opened now).
pub(crate) async fn advance_cursor(
    pool: &PgPool,
    organization_id: Uuid,
    newest_seen: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE discovery_cursors SET since = greatest(since, least($2, now())), updated_at = now()
          WHERE organization_id = $1",
    )
    .bind(organization_id)
    .bind(newest_seen)
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims the next due investigation: a queued one whose time has come, or a running one whose
/// lease expired (taken over). A first start passes the budget and rate limits first.
pub(crate) async fn claim(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    limits: InvestigationLimits,
) -> Result<Claim, Error> {
    let mut transaction = pool.begin().await?;
    let candidate: Option<Candidate> = sqlx::query_as(
        "SELECT id, organization_id, services, status, attempts, max_attempts, error
           FROM investigations
          WHERE (status = 'queued' AND not_before <= now())
             OR (status = 'running' AND lease_expires_at < now())
          ORDER BY not_before, created_at
          LIMIT 1
          FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(candidate) = candidate else {
        return Ok(Claim::Empty);
    };
    if candidate.attempts >= candidate.max_attempts {
        let last = match candidate.status.as_str() {
            "running" => "its last attempt's worker stopped renewing its lease".to_owned(),
            _ => candidate
                .error
                .clone()
                .unwrap_or_else(|| "no error recorded".into()),
        };
        sqlx::query(
            "UPDATE investigations
                SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
                    status_reason = $2, error = coalesce(error, $3)
              WHERE id = $1",
        )
        .bind(candidate.id)
        .bind(format!(
            "gave up after {} attempts: {last}",
            candidate.attempts
        ))
        .bind(&last)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        return Ok(Claim::Decided);
    }
    if candidate.attempts == 0
        && let Some(decision) = admit(&mut transaction, &candidate, limits).await?
    {
        match decision {
            Admission::Skip(reason) => {
                sqlx::query(
                    "UPDATE investigations
                            SET status = 'skipped', status_reason = $2, finished_at = now()
                          WHERE id = $1",
                )
                .bind(candidate.id)
                .bind(reason)
                .execute(&mut *transaction)
                .await?;
            }
            Admission::Defer(reason, wait) => {
                sqlx::query(
                    "UPDATE investigations
                            SET status_reason = $2, not_before = now() + make_interval(secs => $3)
                          WHERE id = $1",
                )
                .bind(candidate.id)
                .bind(reason)
                .bind(seconds(wait))
                .execute(&mut *transaction)
                .await?;
            }
        }
        transaction.commit().await?;
        return Ok(Claim::Decided);
    }
    let claimed: ClaimedInvestigation = sqlx::query_as(
        "UPDATE investigations
            SET status = 'running', status_reason = NULL, attempts = attempts + 1,
                lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
                heartbeat_at = now(), started_at = coalesce(started_at, now())
          WHERE id = $1
         RETURNING id, organization_id, incident_id, incident_reference, correlation_id, attempts",
    )
    .bind(candidate.id)
    .bind(worker_id)
    .bind(seconds(lease))
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Claim::Claimed(claimed))
}

enum Admission {
    Skip(String),
    Defer(String, Duration),
}

/// The budget and rate-limit decision for a first start, under the lock of the organisation's
/// budget row for today (which serialises these decisions per organisation). `None`: go ahead,
/// and the start is counted.
async fn admit(
    transaction: &mut sqlx::PgConnection,
    candidate: &Candidate,
    limits: InvestigationLimits,
) -> Result<Option<Admission>, Error> {
    sqlx::query(
        "INSERT INTO investigation_budgets (organization_id, day)
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date) ON CONFLICT DO NOTHING",
    )
    .bind(candidate.organization_id)
    .execute(&mut *transaction)
    .await?;
    let started_today: i32 = sqlx::query_scalar(
        "SELECT started FROM investigation_budgets
          WHERE organization_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date FOR UPDATE",
    )
    .bind(candidate.organization_id)
    .fetch_one(&mut *transaction)
    .await?;
    let budget = i64::from(limits.daily_budget_per_organization);
    if i64::from(started_today) >= budget {
        return Ok(Some(Admission::Skip(format!(
            "skipped: the organisation's daily budget of {budget} investigations is spent (UTC day)"
        ))));
    }
    if !candidate.services.is_empty() {
        let per_service = i64::from(limits.per_service_per_hour);
        let busiest: Option<(String, i64)> = sqlx::query_as(
            "SELECT service, count(*) FROM investigations, unnest(services) AS service
              WHERE organization_id = $1 AND id <> $2 AND started_at > now() - interval '1 hour'
                AND service = ANY ($3)
              GROUP BY service ORDER BY count(*) DESC LIMIT 1",
        )
        .bind(candidate.organization_id)
        .bind(candidate.id)
        .bind(&candidate.services)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some((service, count)) = busiest.filter(|(_, count)| *count >= per_service) {
            return Ok(Some(Admission::Skip(format!(
                "skipped: {service} already had {count} investigations in the last hour (at most {per_service})"
            ))));
        }
    }
    let per_minute = i64::from(limits.per_organization_per_minute);
    let last_minute: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM investigations
          WHERE organization_id = $1 AND started_at > now() - interval '1 minute'",
    )
    .bind(candidate.organization_id)
    .fetch_one(&mut *transaction)
    .await?;
    if last_minute >= per_minute {
        return Ok(Some(Admission::Defer(
            format!(
                "queued: at most {per_minute} investigations start per minute in an organisation"
            ),
            Duration::from_secs(10),
        )));
    }
    sqlx::query(
        "UPDATE investigation_budgets SET started = started + 1
          WHERE organization_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
    )
    .bind(candidate.organization_id)
    .execute(&mut *transaction)
    .await?;
    Ok(None)
}

/// Renews the lease; false when this worker no longer holds it.
pub(crate) async fn heartbeat(
    pool: &PgPool,
    id: Uuid,
    worker_id: &str,
    lease: Duration,
) -> Result<bool, Error> {
    let renewed = sqlx::query(
        "UPDATE investigations
            SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $3)
          WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker_id)
    .bind(seconds(lease))
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Records a step while this worker holds the lease; `None` when it lost it.
pub(crate) async fn record_step(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    worker_id: &str,
    step: &StepRecord<'_>,
) -> Result<Option<i64>, Error> {
    let duration_ms = i32::try_from(step.duration.as_millis()).unwrap_or(i32::MAX);
    let step_id: Option<i64> = sqlx::query_scalar(
        "WITH held AS (
             UPDATE investigations SET mcp_calls = mcp_calls + 1
              WHERE id = $1 AND lease_owner = $2 AND status = 'running'
             RETURNING id
         )
         INSERT INTO investigation_steps
             (investigation_id, attempt, name, tool, arguments, status, summary, result, duration_ms)
         SELECT held.id, $3, $4, $5, $6, $7, $8, $9, $10 FROM held
         RETURNING id",
    )
    .bind(id)
    .bind(worker_id)
    .bind(step.attempt)
    .bind(step.name)
    .bind(step.tool)
    .bind(step.arguments)
    .bind(step.status)
    .bind(step.summary)
    .bind(step.result)
    .bind(duration_ms)
    .fetch_optional(executor)
    .await?;
    Ok(step_id)
}

/// A recorded step as the model reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StepText {
    pub id: i64,
    pub name: String,
    pub tool: String,
    pub status: String,
    pub summary: String,
    pub result: Option<serde_json::Value>,
}

/// The steps this attempt recorded, in order.
pub(crate) async fn steps_of_attempt(
    pool: &PgPool,
    investigation: &ClaimedInvestigation,
) -> Result<Vec<StepText>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, name, tool, status, summary, result FROM investigation_steps
          WHERE investigation_id = $1 AND attempt = $2 ORDER BY id",
    )
    .bind(investigation.id)
    .bind(investigation.attempts)
    .fetch_all(pool)
    .await?)
}

/// What one organisation's investigations may spend on the model per UTC day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DailyModelBudget {
    pub calls: u32,
    pub tokens: u64,
    pub time: std::time::Duration,
}

/// Counts one model call against the organisation's daily model budget; false (nothing counted)
/// when today's calls, tokens or time already reached their limit.
pub(crate) async fn reserve_model_call(
    pool: &PgPool,
    organization_id: Uuid,
    budget: DailyModelBudget,
) -> Result<bool, Error> {
    let counted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO investigation_budgets (organization_id, day, model_calls)
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1)
         ON CONFLICT (organization_id, day) DO UPDATE
            SET model_calls = investigation_budgets.model_calls + 1
          WHERE investigation_budgets.model_calls < $2 AND investigation_budgets.model_tokens < $3
            AND investigation_budgets.model_milliseconds < $4
         RETURNING model_calls",
    )
    .bind(organization_id)
    .bind(i32::try_from(budget.calls).unwrap_or(i32::MAX))
    .bind(i64::try_from(budget.tokens).unwrap_or(i64::MAX))
    .bind(i64::try_from(budget.time.as_millis()).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    Ok(counted.is_some())
}

/// Adds the tokens and time of a model call to the organisation's count for today.
pub(crate) async fn add_model_usage(
    pool: &PgPool,
    organization_id: Uuid,
    tokens: u64,
    elapsed: std::time::Duration,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE investigation_budgets
            SET model_tokens = model_tokens + $2, model_milliseconds = model_milliseconds + $3
          WHERE organization_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
    )
    .bind(organization_id)
    .bind(i64::try_from(tokens).unwrap_or(i64::MAX))
    .bind(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records where the timeline note stands; false when this worker no longer holds the lease.
pub(crate) async fn set_note_status(
    connection: &mut sqlx::PgConnection,
    id: Uuid,
    worker_id: &str,
    status: &str,
    event_id: Option<Uuid>,
) -> Result<bool, Error> {
    let updated = sqlx::query(
        "UPDATE investigations SET note_status = $3, note_event_id = coalesce($4, note_event_id)
          WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker_id)
    .bind(status)
    .bind(event_id)
    .execute(connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Ends a run with its report.
pub(crate) async fn complete(
    pool: &PgPool,
    id: Uuid,
    worker_id: &str,
    report: &Value,
) -> Result<bool, Error> {
    let updated = sqlx::query(
        "UPDATE investigations
            SET status = 'completed', report = $3, status_reason = NULL,
                lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
          WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker_id)
    .bind(report)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Ends an attempt that failed: queued again after `backoff` while attempts remain (or never
/// when `retry` is false), failed with the reason otherwise.
pub(crate) async fn give_back(
    pool: &PgPool,
    id: Uuid,
    worker_id: &str,
    error: &str,
    backoff: Duration,
    retry: bool,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE investigations
            SET status = CASE WHEN $5 AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
                status_reason = CASE WHEN $5 AND attempts < max_attempts
                                     THEN 'queued: retrying after attempt ' || attempts || ' failed'
                                     ELSE 'failed after ' || attempts || ' attempt(s): ' || $3 END,
                error = $3,
                not_before = now() + make_interval(secs => $4),
                lease_owner = NULL, lease_expires_at = NULL,
                finished_at = CASE WHEN $5 AND attempts < max_attempts THEN NULL ELSE now() END
          WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(worker_id)
    .bind(error)
    .bind(seconds(backoff))
    .bind(retry)
    .execute(pool)
    .await?;
    Ok(())
}
