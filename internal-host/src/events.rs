//! The durable event log of conversations: everything a page shows of a turn (its question, the
//! answer's text, each tool call and result, approvals, notices, the end) is a [`TurnEvent`] stored
//! with a sequence number before anyone sees it. A page reads the log after the last sequence it
//! has (SSE `Last-Event-ID`), so a reload or a dropped connection loses nothing; live readers are
//! woken by an in-process signal and also poll, so a missed signal only delays them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::Error;

/// How long a live reader waits for a signal before it reads the log anyway.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One step of a turn, as stored and as pages render it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TurnEvent {
    TurnStarted {
        question: String,
        /// Which model answers, e.g. `gemma-3-270m (local)`.
        model: String,
    },
    /// A piece of the answer's Markdown text, in order.
    Text { text: String },
    ToolCallStarted {
        call_id: String,
        server: String,
        tool: String,
        arguments: Value,
    },
    ToolCallFinished {
        call_id: String,
        #[serde(flatten)]
        outcome: ToolCallOutcome,
    },
    /// A change waits for the signed-in user's Confirm or Reject.
    ApprovalRequested {
        approval_id: Uuid,
        server: String,
        tool: String,
        /// What would change, as the server described it.
        plan: Value,
        expires_at: DateTime<Utc>,
    },
    ApprovalDecided {
        approval_id: Uuid,
        /// `confirmed`, `rejected` or `expired`.
        decision: String,
        decided_by: Option<Uuid>,
    },
    /// Something the user should know that is not the answer: a cap was reached, a repeated call
    /// was stopped, a server is down.
    Notice { text: String },
    TurnFinished {
        status: TurnStatus,
        model_calls: u32,
        tool_calls: u32,
        input_tokens: u64,
        output_tokens: u64,
        elapsed_ms: u64,
    },
}

/// How a tool call ended, for the trace row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOutcome {
    pub status: CallStatus,
    /// The result's text as the model got it (capped), or the error's message.
    pub text: String,
    pub duration_ms: u64,
    /// The server cut its result (`truncated` in the structured result), or the host capped the
    /// text before the model read it.
    pub truncated: bool,
    /// Rows in the result, when the tool returns rows.
    pub rows: Option<u64>,
    /// The full result's size in bytes.
    pub bytes: u64,
    /// The SQL the server ran, for `run_select` and the like.
    pub sql: Option<String>,
    /// Time series worth drawing.
    pub chart: Option<Chart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ok,
    /// The tool answered with `isError`: a result the model reads.
    ToolError,
    /// The server could not be reached or broke the protocol.
    TransportError,
    /// The host did not make the call: bad arguments, a denied tool, a repeated call, a cap.
    Refused,
    /// The call waits for the user's approval.
    AwaitingApproval,
}

/// Series to draw as a small chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    pub title: String,
    pub unit: Option<String>,
    pub series: Vec<ChartSeries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartSeries {
    pub label: String,
    pub points: Vec<ChartPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChartPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// The status of a turn, as the `turns` table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    Running,
    WaitingForApproval,
    Completed,
    Stopped,
    Failed,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub sequence: i64,
    pub turn_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub event: TurnEvent,
}

/// Appends to and reads the log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    database: PgPool,
    appended: broadcast::Sender<Uuid>,
}

impl TurnStatus {
    /// The value in the `turns.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::WaitingForApproval => "waiting_for_approval",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// A turn in this status does no more work until something happens (or never again).
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Running)
    }
}

impl TurnEvent {
    /// The `events.kind` column: the event's tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TurnStarted { .. } => "turn_started",
            Self::Text { .. } => "text",
            Self::ToolCallStarted { .. } => "tool_call_started",
            Self::ToolCallFinished { .. } => "tool_call_finished",
            Self::ApprovalRequested { .. } => "approval_requested",
            Self::ApprovalDecided { .. } => "approval_decided",
            Self::Notice { .. } => "notice",
            Self::TurnFinished { .. } => "turn_finished",
        }
    }
}

impl EventLog {
    pub fn new(database: PgPool) -> Self {
        let (appended, _) = broadcast::channel(1024);
        Self { database, appended }
    }

    /// Stores `event` for `turn_id` of `conversation_id` and wakes the conversation's readers.
    pub async fn append(
        &self,
        conversation_id: Uuid,
        turn_id: Uuid,
        event: &TurnEvent,
    ) -> Result<i64, Error> {
        let payload = serde_json::to_value(event)
            .map_err(|error| Error::Internal(format!("an event could not be encoded: {error}")))?;
        let sequence: i64 = sqlx::query_scalar(
            "INSERT INTO events (conversation_id, turn_id, kind, payload)
             VALUES ($1, $2, $3, $4) RETURNING sequence",
        )
        .bind(conversation_id)
        .bind(turn_id)
        .bind(event.kind())
        .bind(payload)
        .fetch_one(&self.database)
        .await?;
        // Nobody listening is fine: readers poll as well.
        let _ = self.appended.send(conversation_id);
        Ok(sequence)
    }

    /// Up to `limit` events of `conversation_id` after sequence `after`, oldest first. The caller
    /// has checked that the conversation belongs to the signed-in user.
    pub async fn read_after(
        &self,
        conversation_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT sequence, turn_id, created_at, payload FROM events
              WHERE conversation_id = $1 AND sequence > $2
              ORDER BY sequence LIMIT $3",
        )
        .bind(conversation_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.database)
        .await?;
        rows.into_iter().map(decode).collect()
    }

    /// Every event of one turn, oldest first (to rebuild what the model saw).
    pub async fn read_turn(&self, turn_id: Uuid) -> Result<Vec<StoredEvent>, Error> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT sequence, turn_id, created_at, payload FROM events
              WHERE turn_id = $1 ORDER BY sequence",
        )
        .bind(turn_id)
        .fetch_all(&self.database)
        .await?;
        rows.into_iter().map(decode).collect()
    }

    /// Waits until an event is appended to `conversation_id` (in this process) or
    /// [`POLL_INTERVAL`] passes, whichever is first; then the caller reads the log again.
    pub async fn wait_for_more(&self, conversation_id: Uuid, signals: &mut Signals) {
        let deadline = tokio::time::sleep(POLL_INTERVAL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                signal = signals.0.recv() => match signal {
                    Ok(appended) if appended == conversation_id => return,
                    Ok(_) => continue,
                    // Lagged: something may be ours. Closed: only polling is left.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        deadline.as_mut().await;
                        return;
                    }
                },
            }
        }
    }

    /// A subscription to append signals; take it before the first read so nothing falls between.
    pub fn signals(&self) -> Signals {
        Signals(self.appended.subscribe())
    }
}

type EventRow = (i64, Uuid, DateTime<Utc>, Value);

fn decode((sequence, turn_id, created_at, payload): EventRow) -> Result<StoredEvent, Error> {
    let event = serde_json::from_value(payload)
        .map_err(|error| Error::Internal(format!("event {sequence} could not be read: {error}")))?;
    Ok(StoredEvent {
        sequence,
        turn_id,
        created_at,
        event,
    })
}

/// A live reader's subscription to append signals.
#[derive(Debug)]
pub struct Signals(broadcast::Receiver<Uuid>);
