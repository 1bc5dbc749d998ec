//! Pending changes and the user's decisions on them, in the host's `approvals` table. The server's
//! confirmation token is stored here and read back only to make the confirming call: it never
//! enters an event, a log line or the model's context. A decision is claimed atomically (pending,
//! unexpired, this turn, the conversation's own user), so a double click confirms once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::TurnContext;
use crate::error::Error;

/// A change waiting for the user.
pub(crate) struct NewApproval<'a> {
    pub turn_id: Uuid,
    pub call_id: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub plan: &'a Value,
    /// The server's confirmation token; `None` for a tool without two steps.
    pub token: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
}

/// A decision the user was allowed to make, with what the host needs to act on it.
pub(crate) struct Claimed {
    pub server: String,
    pub tool: String,
    pub arguments: Value,
    pub token: Option<String>,
}

/// What claiming a decision found.
pub(crate) enum Claim {
    Claimed(Claimed),
    /// The plan expired before the decision; it is now marked expired.
    Expired,
    /// Nothing to decide (already decided, unknown, or not this user's): says why.
    Refused(String),
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Claimed")
            .field("server", &self.server)
            .field("tool", &self.tool)
            .field("has_token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) async fn insert(database: &PgPool, approval: &NewApproval<'_>) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO approvals (id, turn_id, call_id, server, tool, arguments, plan, confirmation_token, status, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
    )
    .bind(id)
    .bind(approval.turn_id)
    .bind(approval.call_id)
    .bind(approval.server)
    .bind(approval.tool)
    .bind(approval.arguments)
    .bind(approval.plan)
    .bind(approval.token)
    .bind(approval.expires_at)
    .execute(database)
    .await?;
    Ok(id)
}

/// Marks approval `id` of `turn` as `status` (`confirmed` or `rejected`) by the turn's user, if it
/// is still pending and unexpired and the turn waits for the user, and moves the turn back to
/// `running`, in one transaction that locks the turn's row: two decisions (a double click, two
/// approvals decided at once) never both continue the turn. Otherwise says why not.
pub(crate) async fn claim(
    database: &PgPool,
    id: Uuid,
    turn: &TurnContext,
    status: &str,
) -> Result<Claim, Error> {
    let mut transaction = database.begin().await?;
    let turn_status: Option<String> =
        sqlx::query_scalar("SELECT status FROM turns WHERE id = $1 FOR UPDATE")
            .bind(turn.turn_id)
            .fetch_optional(&mut *transaction)
            .await?;
    let waiting = turn_status.as_deref() == Some("waiting_for_approval");
    let claimed: Option<(String, String, Value, Option<String>)> = if waiting {
        sqlx::query_as(
            "UPDATE approvals a SET status = $4, decided_by = $3, decided_at = now()
               FROM turns t JOIN conversations c ON c.id = t.conversation_id
              WHERE a.id = $1 AND a.turn_id = $2 AND t.id = a.turn_id
                AND c.user_id = $3 AND c.organization_id = $5
                AND a.status = 'pending' AND a.expires_at > now()
             RETURNING a.server, a.tool, a.arguments, a.confirmation_token",
        )
        .bind(id)
        .bind(turn.turn_id)
        .bind(turn.user.user_id)
        .bind(status)
        .bind(turn.user.organization_id)
        .fetch_optional(&mut *transaction)
        .await?
    } else {
        None
    };
    if let Some((server, tool, arguments, token)) = claimed {
        resume(&mut transaction, turn.turn_id).await?;
        transaction.commit().await?;
        return Ok(Claim::Claimed(Claimed {
            server,
            tool,
            arguments,
            token,
        }));
    }
    let found: Option<(String, bool, Uuid, Uuid)> = sqlx::query_as(
        "SELECT a.status, a.expires_at <= now(), c.user_id, c.organization_id
           FROM approvals a JOIN turns t ON t.id = a.turn_id JOIN conversations c ON c.id = t.conversation_id
          WHERE a.id = $1 AND a.turn_id = $2",
    )
    .bind(id)
    .bind(turn.turn_id)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((current, expired, owner, organization)) = found else {
        return Ok(Claim::Refused("this turn has no such approval".into()));
    };
    if owner != turn.user.user_id || organization != turn.user.organization_id {
        return Ok(Claim::Refused(
            "only the user who asked can decide on this plan".into(),
        ));
    }
    if current != "pending" {
        return Ok(Claim::Refused(format!(
            "this plan was already {current}; nothing more was done"
        )));
    }
    if !waiting {
        return Ok(Claim::Refused(
            "the assistant is still working on this turn; decide once it waits for you".into(),
        ));
    }
    if expired {
        sqlx::query("UPDATE approvals SET status = 'expired', decided_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        resume(&mut transaction, turn.turn_id).await?;
        transaction.commit().await?;
        return Ok(Claim::Expired);
    }
    Ok(Claim::Refused(
        "this plan can no longer be decided; nothing was done".into(),
    ))
}

async fn resume(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    turn_id: Uuid,
) -> Result<(), Error> {
    sqlx::query("UPDATE turns SET status = 'running', finished_at = NULL WHERE id = $1")
        .bind(turn_id)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Approvals of `turn_id` still waiting for the user.
pub(crate) async fn pending(database: &PgPool, turn_id: Uuid) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM approvals WHERE turn_id = $1 AND status = 'pending' AND expires_at > now()",
    )
    .bind(turn_id)
    .fetch_one(database)
    .await?)
}
