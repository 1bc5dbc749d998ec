//! Storage of conversations, their turns and approvals, always through an [`Owner`]: every query
//! names the signed-in user AND their organisation, so another user's conversation id finds
//! nothing (a 404, never their data). Functions that take a bare conversation id take an
//! [`OwnedConversation`], which only these lookups make.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::credentials::ActingUser;
use crate::error::Error;
use crate::events::TurnStatus;

/// Whose data a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub user_id: Uuid,
    pub organization_id: Uuid,
}

/// A conversation that was found through its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedConversation {
    pub id: Uuid,
    pub title: String,
    pub updated_at: DateTime<Utc>,
}

/// A turn as the `turns` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub correlation_id: Uuid,
    pub question: String,
    pub status: TurnStatus,
    pub model_calls: i32,
    pub tool_calls: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An approval as the `approvals` table holds it (without its confirmation token, which never
/// leaves the agent).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub id: Uuid,
    pub turn_id: Uuid,
    pub server: String,
    pub tool: String,
    pub plan: Value,
    /// `pending`, `confirmed`, `rejected` or `expired`.
    pub status: String,
}

impl From<&ActingUser> for Owner {
    fn from(user: &ActingUser) -> Self {
        Self {
            user_id: user.user_id,
            organization_id: user.organization_id,
        }
    }
}

type TurnRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    i32,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const TURN_COLUMNS: &str = "t.id, t.conversation_id, t.correlation_id, t.question, t.status, \
     t.model_calls, t.tool_calls, t.created_at, t.finished_at";

/// The owner's conversations, most recently active first.
pub async fn list(
    database: &PgPool,
    owner: Owner,
    limit: i64,
) -> Result<Vec<OwnedConversation>, Error> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, title, updated_at FROM conversations
          WHERE organization_id = $1 AND user_id = $2
          ORDER BY updated_at DESC LIMIT $3",
    )
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .bind(limit)
    .fetch_all(database)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, title, updated_at)| OwnedConversation {
            id,
            title,
            updated_at,
        })
        .collect())
}

/// The owner's conversation `id`, or `None` (whether it does not exist or is someone else's).
pub async fn find(
    database: impl PgExecutor<'_>,
    owner: Owner,
    id: Uuid,
) -> Result<Option<OwnedConversation>, Error> {
    let row: Option<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, title, updated_at FROM conversations
          WHERE id = $1 AND organization_id = $2 AND user_id = $3",
    )
    .bind(id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .fetch_optional(database)
    .await?;
    Ok(row.map(|(id, title, updated_at)| OwnedConversation {
        id,
        title,
        updated_at,
    }))
}

/// A new conversation of `owner`, titled after its first question.
pub async fn create(
    database: impl PgExecutor<'_>,
    owner: Owner,
    question: &str,
) -> Result<OwnedConversation, Error> {
    let id = Uuid::now_v7();
    let title = title_of(question);
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO conversations (id, organization_id, user_id, title)
         VALUES ($1, $2, $3, $4) RETURNING updated_at",
    )
    .bind(id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .bind(&title)
    .fetch_one(database)
    .await?;
    Ok(OwnedConversation {
        id,
        title,
        updated_at,
    })
}

/// The turns of an owned conversation, oldest first.
pub async fn turns(
    database: &PgPool,
    owner: Owner,
    conversation: &OwnedConversation,
) -> Result<Vec<TurnRecord>, Error> {
    let rows: Vec<TurnRow> = sqlx::query_as(&format!(
        "SELECT {TURN_COLUMNS} FROM turns t JOIN conversations c ON c.id = t.conversation_id
          WHERE t.conversation_id = $1 AND c.organization_id = $2 AND c.user_id = $3
          ORDER BY t.created_at, t.id"
    ))
    .bind(conversation.id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .fetch_all(database)
    .await?;
    rows.into_iter().map(turn_from_row).collect()
}

/// Turn `turn_id` of the owner's conversation `conversation_id`, or `None`.
pub async fn turn(
    database: &PgPool,
    owner: Owner,
    conversation_id: Uuid,
    turn_id: Uuid,
) -> Result<Option<TurnRecord>, Error> {
    let row: Option<TurnRow> = sqlx::query_as(&format!(
        "SELECT {TURN_COLUMNS} FROM turns t JOIN conversations c ON c.id = t.conversation_id
          WHERE t.id = $1 AND t.conversation_id = $2
            AND c.organization_id = $3 AND c.user_id = $4"
    ))
    .bind(turn_id)
    .bind(conversation_id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .fetch_optional(database)
    .await?;
    row.map(turn_from_row).transpose()
}

/// Approval `approval_id` of a turn of the owner's conversation `conversation_id`, with its turn.
pub async fn approval(
    database: &PgPool,
    owner: Owner,
    conversation_id: Uuid,
    approval_id: Uuid,
) -> Result<Option<(ApprovalRecord, TurnRecord)>, Error> {
    let row: Option<(Uuid, String, String, Value, String, Uuid)> = sqlx::query_as(
        "SELECT a.id, a.server, a.tool, a.plan, a.status, a.turn_id
           FROM approvals a
           JOIN turns t ON t.id = a.turn_id
           JOIN conversations c ON c.id = t.conversation_id
          WHERE a.id = $1 AND t.conversation_id = $2
            AND c.organization_id = $3 AND c.user_id = $4",
    )
    .bind(approval_id)
    .bind(conversation_id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .fetch_optional(database)
    .await?;
    let Some((id, server, tool, plan, status, turn_id)) = row else {
        return Ok(None);
    };
    let Some(turn) = turn(database, owner, conversation_id, turn_id).await? else {
        return Ok(None);
    };
    Ok(Some((
        ApprovalRecord {
            id,
            turn_id,
            server,
            tool,
            plan,
            status,
        },
        turn,
    )))
}

/// The status of every approval of an owned conversation, by id.
pub async fn approval_statuses(
    database: &PgPool,
    owner: Owner,
    conversation: &OwnedConversation,
) -> Result<std::collections::HashMap<Uuid, String>, Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT a.id, a.status FROM approvals a
           JOIN turns t ON t.id = a.turn_id
           JOIN conversations c ON c.id = t.conversation_id
          WHERE t.conversation_id = $1 AND c.organization_id = $2 AND c.user_id = $3",
    )
    .bind(conversation.id)
    .bind(owner.organization_id)
    .bind(owner.user_id)
    .fetch_all(database)
    .await?;
    Ok(rows.into_iter().collect())
}

/// A conversation's title: the question's first line, at most 80 characters.
pub fn title_of(question: &str) -> String {
    const MAX: usize = 80;
    let line = question
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty());
    let line = line.unwrap_or("New conversation");
    if line.chars().count() <= MAX {
        return line.to_owned();
    }
    let mut title: String = line.chars().take(MAX - 1).collect();
    title.push('…');
    title
}

/// The value of the `turns.status` column as a [`TurnStatus`].
pub fn parse_status(text: &str) -> Result<TurnStatus, Error> {
    Ok(match text {
        "running" => TurnStatus::Running,
        "waiting_for_approval" => TurnStatus::WaitingForApproval,
        "completed" => TurnStatus::Completed,
        "stopped" => TurnStatus::Stopped,
        "failed" => TurnStatus::Failed,
        other => return Err(Error::Internal(format!("unknown turn status {other:?}"))),
    })
}

fn turn_from_row(row: TurnRow) -> Result<TurnRecord, Error> {
    let (
        id,
        conversation_id,
        correlation_id,
        question,
        status,
        model_calls,
        tool_calls,
        created_at,
        finished_at,
    ) = row;
    Ok(TurnRecord {
        id,
        conversation_id,
        correlation_id,
        question,
        status: parse_status(&status)?,
        model_calls,
        tool_calls,
        created_at,
        finished_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_short() {
        assert_eq!(
            title_of("  \nWhich deploy caused INC-4?\nmore"),
            "Which deploy caused INC-4?"
        );
        assert_eq!(title_of("   "), "New conversation");
        let long = "x".repeat(200);
        assert_eq!(title_of(&long).chars().count(), 80);
        assert!(title_of(&long).ends_with('…'));
    }
}
