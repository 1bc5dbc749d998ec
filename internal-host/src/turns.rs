//! Orchestration of turns: a question becomes a conversation (made on the first question) and a
//! `running` turn with its own correlation id, and a task runs it through [`Turns`] (the agent)
//! with a cancellation token kept in an in-process registry by turn id. Stop cancels that token;
//! a turn whose task is gone (another process, a restart) is ended `stopped` directly, and turns
//! left `running` by an earlier process are ended `failed` when the host starts. A confirmed or
//! rejected approval starts [`Turns::decide`] the same way. One turn runs at a time per
//! conversation (a unique index enforces it).
//!
//! Whatever the agent does, a turn ends: when its task returns, panics or ignores a stop for
//! [`STOP_GRACE`], the turn is ended here if the agent left it `running`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::Agent;
use crate::conversations::{self, Owner};
use crate::credentials::ActingUser;
use crate::error::Error;
use crate::events::{EventLog, TurnEvent, TurnStatus};
use crate::llm::ModelInfo;

/// How long a stopped turn's task may take to notice before it is aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub use crate::agent::{Decision, TurnContext};

/// The future of a turn's work.
pub type TurnFuture = Pin<Box<dyn Future<Output = Result<TurnStatus, Error>> + Send>>;

/// What runs turns: the agent (its `run_turn` and `decide`), or a scripted one in tests. It
/// appends the turn's events to the log and updates the turn's row (status, counters) itself.
pub trait Turns: Send + Sync + 'static {
    /// Which model answers, for the page.
    fn model(&self) -> ModelInfo;

    /// Answers the turn's question until it completes, fails, is cancelled or waits for an
    /// approval.
    fn run_turn(
        &self,
        turn: TurnContext,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture;

    /// Carries out (or tells the model of) the person's decision on `approval_id`, then goes on.
    fn decide(
        &self,
        turn: TurnContext,
        approval_id: Uuid,
        decision: Decision,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture;
}

/// Starts, stops and resumes turns. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    database: PgPool,
    events: EventLog,
    turns: Arc<dyn Turns>,
    running: Arc<Mutex<HashMap<Uuid, RunningTurn>>>,
    max_question_chars: usize,
}

struct RunningTurn {
    cancel: CancellationToken,
    abort: Option<tokio::task::AbortHandle>,
}

/// Why a request about a turn was refused.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("not found")]
    NotFound,
    #[error("the question is empty")]
    EmptyQuestion,
    #[error("the question has {chars} characters; at most {max} are allowed")]
    QuestionTooLong { chars: usize, max: usize },
    /// Something else is going on in the conversation or with the approval.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] Error),
}

impl Orchestrator {
    pub fn new(
        database: PgPool,
        events: EventLog,
        turns: Arc<dyn Turns>,
        max_question_chars: usize,
    ) -> Self {
        Self {
            database,
            events,
            turns,
            running: Arc::new(Mutex::new(HashMap::new())),
            max_question_chars,
        }
    }

    /// Which model answers.
    pub fn model(&self) -> ModelInfo {
        self.turns.model()
    }

    /// The longest question accepted, in characters.
    pub fn max_question_chars(&self) -> usize {
        self.max_question_chars
    }

    /// Whether this process runs a task for `turn_id`.
    pub fn is_running_here(&self, turn_id: Uuid) -> bool {
        self.registry().contains_key(&turn_id)
    }

    /// Asks `question` in the user's conversation `conversation_id`, or in a new conversation;
    /// returns the conversation's and the turn's ids once the turn runs.
    pub async fn ask(
        &self,
        user: &ActingUser,
        conversation_id: Option<Uuid>,
        question: &str,
    ) -> Result<(Uuid, Uuid), TurnError> {
        let question = question.trim();
        if question.is_empty() {
            return Err(TurnError::EmptyQuestion);
        }
        let chars = question.chars().count();
        if chars > self.max_question_chars {
            return Err(TurnError::QuestionTooLong {
                chars,
                max: self.max_question_chars,
            });
        }
        let owner = Owner::from(user);
        let mut transaction = self.database.begin().await.map_err(Error::from)?;
        let conversation = match conversation_id {
            Some(id) => conversations::find(&mut *transaction, owner, id)
                .await?
                .ok_or(TurnError::NotFound)?,
            None => conversations::create(&mut *transaction, owner, question).await?,
        };
        let turn_id = Uuid::now_v7();
        let correlation_id = Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO turns (id, conversation_id, correlation_id, question, status)
             VALUES ($1, $2, $3, $4, 'running')",
        )
        .bind(turn_id)
        .bind(conversation.id)
        .bind(correlation_id)
        .bind(question)
        .execute(&mut *transaction)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(error))
                if error.constraint() == Some("turns_one_active_per_conversation") =>
            {
                return Err(TurnError::Conflict(
                    "This conversation is still busy with a question (running or waiting for your approval). Wait for it, or stop it, then ask again.".into(),
                ));
            }
            Err(error) => return Err(Error::from(error).into()),
        }
        sqlx::query("UPDATE conversations SET updated_at = now() WHERE id = $1")
            .bind(conversation.id)
            .execute(&mut *transaction)
            .await
            .map_err(Error::from)?;
        transaction.commit().await.map_err(Error::from)?;
        let context = TurnContext {
            turn_id,
            conversation_id: conversation.id,
            correlation_id,
            user: user.clone(),
            question: question.to_owned(),
        };
        tracing::info!(turn = %turn_id, conversation = %conversation.id, %correlation_id, "turn started");
        self.spawn(context, |turns, context, events, cancel| {
            turns.run_turn(context, events, cancel)
        });
        Ok((conversation.id, turn_id))
    }

    /// Stops the user's turn: cancels its task, or ends it directly when no task runs it here.
    pub async fn stop(
        &self,
        user: &ActingUser,
        conversation_id: Uuid,
        turn_id: Uuid,
    ) -> Result<(), TurnError> {
        let turn = conversations::turn(&self.database, Owner::from(user), conversation_id, turn_id)
            .await?
            .ok_or(TurnError::NotFound)?;
        let cancelled = {
            let registry = self.registry();
            registry.get(&turn_id).map(|running| {
                running.cancel.cancel();
                running.abort.clone()
            })
        };
        match cancelled {
            Some(abort) => {
                tracing::info!(turn = %turn_id, "stop requested");
                // A task that ignores the stop is aborted after a grace period.
                let registry = self.running.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STOP_GRACE).await;
                    let still_running = registry
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .contains_key(&turn_id);
                    if still_running && let Some(abort) = abort {
                        tracing::warn!(turn = %turn_id, "a stopped turn did not end in time; its task is aborted");
                        abort.abort();
                    }
                });
            }
            None if matches!(
                turn.status,
                TurnStatus::Running | TurnStatus::WaitingForApproval
            ) =>
            {
                end_turn(
                    &self.database,
                    &self.events,
                    turn.conversation_id,
                    turn_id,
                    TurnStatus::Stopped,
                    None,
                    0,
                )
                .await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Records the user's decision on an approval of their conversation and lets the agent act
    /// on it.
    pub async fn decide(
        &self,
        user: &ActingUser,
        conversation_id: Uuid,
        approval_id: Uuid,
        decision: Decision,
    ) -> Result<(), TurnError> {
        let (approval, turn) = conversations::approval(
            &self.database,
            Owner::from(user),
            conversation_id,
            approval_id,
        )
        .await?
        .ok_or(TurnError::NotFound)?;
        if approval.status != "pending" {
            return Err(TurnError::Conflict(format!(
                "This change was already answered ({}).",
                approval.status
            )));
        }
        if turn.status != TurnStatus::WaitingForApproval {
            return Err(TurnError::Conflict(
                "This turn is not waiting for an approval any more.".into(),
            ));
        }
        let context = TurnContext {
            turn_id: turn.id,
            conversation_id: turn.conversation_id,
            correlation_id: turn.correlation_id,
            user: user.clone(),
            question: turn.question,
        };
        let started = self.spawn(context, move |turns, context, events, cancel| {
            turns.decide(context, approval_id, decision, events, cancel)
        });
        if !started {
            return Err(TurnError::Conflict(
                "This turn is already working on an answer.".into(),
            ));
        }
        tracing::info!(turn = %turn.id, approval = %approval_id, ?decision, "approval answered");
        Ok(())
    }

    /// Runs `work` for the turn in a task of its own, registered by turn id; `false` when a task
    /// already runs that turn here.
    fn spawn(
        &self,
        context: TurnContext,
        work: impl FnOnce(&dyn Turns, TurnContext, EventLog, CancellationToken) -> TurnFuture,
    ) -> bool {
        let cancel = CancellationToken::new();
        let turn_id = context.turn_id;
        let conversation_id = context.conversation_id;
        {
            let mut registry = self.registry();
            if registry.contains_key(&turn_id) {
                return false;
            }
            registry.insert(
                turn_id,
                RunningTurn {
                    cancel: cancel.clone(),
                    abort: None,
                },
            );
        }
        let future = work(
            self.turns.as_ref(),
            context,
            self.events.clone(),
            cancel.clone(),
        );
        let started = Instant::now();
        let inner = tokio::spawn(future);
        if let Some(running) = self.registry().get_mut(&turn_id) {
            running.abort = Some(inner.abort_handle());
        }
        let database = self.database.clone();
        let events = self.events.clone();
        let registry = self.running.clone();
        tokio::spawn(async move {
            let outcome = inner.await;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let fallback = if cancel.is_cancelled() {
                TurnStatus::Stopped
            } else {
                TurnStatus::Failed
            };
            let (status, problem) = match outcome {
                Ok(Ok(status)) => (status, None),
                Ok(Err(error)) => {
                    let reference = Uuid::new_v4();
                    tracing::error!(turn = %turn_id, %reference, %error, "a turn failed");
                    (
                        fallback,
                        Some(format!(
                            "The assistant could not finish this answer (reference {reference})."
                        )),
                    )
                }
                Err(join_error) if join_error.is_cancelled() => (TurnStatus::Stopped, None),
                Err(join_error) => {
                    let reference = Uuid::new_v4();
                    tracing::error!(turn = %turn_id, %reference, error = %join_error, "a turn's task panicked");
                    (
                        fallback,
                        Some(format!(
                            "The assistant broke down on this answer (reference {reference})."
                        )),
                    )
                }
            };
            // The agent normally ended the turn itself; this only catches a turn it left running.
            let status =
                if problem.is_some() || cancel.is_cancelled() || status == TurnStatus::Running {
                    fallback
                } else {
                    status
                };
            if let Err(error) = settle_after_task(
                &database,
                &events,
                conversation_id,
                turn_id,
                status,
                problem,
                elapsed_ms,
            )
            .await
            {
                tracing::error!(turn = %turn_id, %error, "cannot end a turn");
            }
            registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&turn_id);
        });
        true
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, RunningTurn>> {
        // A panic while holding this lock leaves the map itself intact.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ends turns an earlier process left `running` (their tasks died with it): `failed`, with a
/// notice. Turns waiting for an approval stay waiting. Call once at start-up, before serving;
/// it assumes one host process per database.
pub async fn end_interrupted_turns(database: &PgPool, events: &EventLog) -> Result<usize, Error> {
    let interrupted: Vec<(Uuid, Uuid, i32, i32)> = sqlx::query_as(
        "UPDATE turns SET status = 'failed', finished_at = now() WHERE status = 'running'
         RETURNING id, conversation_id, model_calls, tool_calls",
    )
    .fetch_all(database)
    .await?;
    for (turn_id, conversation_id, model_calls, tool_calls) in &interrupted {
        let notice = TurnEvent::Notice {
            text: "The assistant was restarted while it worked on this answer; the turn was ended."
                .into(),
        };
        events.append(*conversation_id, *turn_id, &notice).await?;
        events
            .append(
                *conversation_id,
                *turn_id,
                &finished(TurnStatus::Failed, *model_calls, *tool_calls, 0),
            )
            .await?;
    }
    if !interrupted.is_empty() {
        tracing::warn!(
            turns = interrupted.len(),
            "ended turns an earlier process left running"
        );
    }
    Ok(interrupted.len())
}

/// What a finished task leaves: a turn the agent left `running` (or waiting, when the task
/// failed) is ended as `status`; a turn that waits for an approval is only marked so.
async fn settle_after_task(
    database: &PgPool,
    events: &EventLog,
    conversation_id: Uuid,
    turn_id: Uuid,
    status: TurnStatus,
    problem: Option<String>,
    elapsed_ms: u64,
) -> Result<(), Error> {
    if status == TurnStatus::WaitingForApproval {
        sqlx::query(
            "UPDATE turns SET status = 'waiting_for_approval' WHERE id = $1 AND status = 'running'",
        )
        .bind(turn_id)
        .execute(database)
        .await?;
        return Ok(());
    }
    end_turn(
        database,
        events,
        conversation_id,
        turn_id,
        status,
        problem,
        elapsed_ms,
    )
    .await
}

/// Ends a turn that is running or waiting for an approval, with no task to tell: its pending
/// approvals expire.
async fn end_turn(
    database: &PgPool,
    events: &EventLog,
    conversation_id: Uuid,
    turn_id: Uuid,
    status: TurnStatus,
    problem: Option<String>,
    elapsed_ms: u64,
) -> Result<(), Error> {
    let mut transaction = database.begin().await?;
    let ended: Option<(i32, i32)> = sqlx::query_as(
        "UPDATE turns SET status = $2, finished_at = now()
          WHERE id = $1 AND status IN ('running', 'waiting_for_approval')
          RETURNING model_calls, tool_calls",
    )
    .bind(turn_id)
    .bind(status.as_str())
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((model_calls, tool_calls)) = ended else {
        return Ok(());
    };
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE approvals SET status = 'expired', decided_at = now()
          WHERE turn_id = $1 AND status = 'pending' RETURNING id",
    )
    .bind(turn_id)
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    for approval_id in expired {
        let decided = TurnEvent::ApprovalDecided {
            approval_id,
            decision: "expired".into(),
            decided_by: None,
        };
        events.append(conversation_id, turn_id, &decided).await?;
    }
    if let Some(text) = problem {
        events
            .append(conversation_id, turn_id, &TurnEvent::Notice { text })
            .await?;
    }
    events
        .append(
            conversation_id,
            turn_id,
            &finished(status, model_calls, tool_calls, elapsed_ms),
        )
        .await?;
    Ok(())
}

fn finished(status: TurnStatus, model_calls: i32, tool_calls: i32, elapsed_ms: u64) -> TurnEvent {
    TurnEvent::TurnFinished {
        status,
        model_calls: u32::try_from(model_calls).unwrap_or(0),
        tool_calls: u32::try_from(tool_calls).unwrap_or(0),
        input_tokens: 0,
        output_tokens: 0,
        elapsed_ms,
    }
}

/// The agent runs turns in production.
impl Turns for Agent {
    fn model(&self) -> ModelInfo {
        Agent::model(self).clone()
    }

    fn run_turn(
        &self,
        turn: TurnContext,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture {
        let agent = self.clone();
        Box::pin(async move { agent.run_turn(&turn, &events, cancel).await })
    }

    fn decide(
        &self,
        turn: TurnContext,
        approval_id: Uuid,
        decision: Decision,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture {
        let agent = self.clone();
        Box::pin(async move {
            agent
                .decide(&turn, approval_id, decision, &events, cancel)
                .await
        })
    }
}

/// Turns when no model is configured: each ends at once with a notice saying so.
#[derive(Debug, Clone)]
pub struct NoModel;

impl Turns for NoModel {
    fn model(&self) -> ModelInfo {
        ModelInfo {
            provider: "none".into(),
            name: "no model configured".into(),
            context_window: 0,
            local: false,
        }
    }

    fn run_turn(
        &self,
        turn: TurnContext,
        events: EventLog,
        _cancel: CancellationToken,
    ) -> TurnFuture {
        Box::pin(async move {
            let notice = TurnEvent::Notice {
                text: "No language model is configured for this assistant; ask the operators."
                    .into(),
            };
            events
                .append(turn.conversation_id, turn.turn_id, &notice)
                .await?;
            Ok(TurnStatus::Failed)
        })
    }

    fn decide(
        &self,
        turn: TurnContext,
        approval_id: Uuid,
        decision: Decision,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture {
        let _ = (approval_id, decision);
        self.run_turn(turn, events, cancel)
    }
}
