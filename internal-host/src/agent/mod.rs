//! The agent loop: answers one question of a signed-in user by streaming a model's reply, running
//! the tools it calls through internal-mcp (as that user), feeding results back, and repeating,
//! until the model answers, a guard stops it, a change waits for the user's approval, it fails, or
//! the user presses Stop. Every step is appended to the event log before anyone sees it, and the
//! `turns` row's status and counters are kept current.
//!
//! Guards ([`TurnLimits`]): caps on model calls, tool calls, wall time and tokens; a breaker on
//! identical calls, which ends the turn when the model repeats a call it already refused;
//! arguments checked against the tool's schema before the call; results capped before they enter
//! the context (the rest paged with `host__read_result`); the conversation kept within the
//! model's window.
//!
//! Approvals: the model can never act alone. A tool that is not read-only asks (see [`policy`]);
//! a server's confirmation token arrives only in a result's `_meta` and goes straight into the
//! `approvals` table; the model reads "waiting for the user's approval"; only [`Agent::decide`]
//! makes the confirming call, and any `confirmation_token` the model writes is refused.

mod approvals;
pub mod fingerprints;
mod history;
mod limits;
pub mod policy;
pub mod prompts;
pub(crate) mod schema;
mod text;
pub mod tools;
pub(crate) mod trace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use limits::TurnLimits;
pub use policy::{Permission, ToolPolicies};

use self::history::Conversation;
use self::limits::{Budget, Cap};
use self::text::Coalescer;
use self::tools::{CONFIRMATION_TOKEN_ARGUMENT, HOST, OfferedTool, READ_RESULT, ToolSet};
use self::trace::Recorded;
use crate::credentials::ActingUser;
use crate::error::Error;
use crate::events::{CallStatus, EventLog, TurnEvent, TurnStatus};
use crate::llm::{
    FinishReason, LlmError, Message, Provider, Request, StreamEvent, ToolCall, Usage,
};
use crate::mcp::{Confirmation, McpConnector, McpSession};

pub use crate::mcp::CONFIRMATION_META_KEY;

/// One turn: which rows it belongs to, who asks, and the question. The web layer created the
/// conversation and turn rows (status `running`) before calling the agent.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub turn_id: Uuid,
    pub conversation_id: Uuid,
    /// Travels to internal-mcp on every call of the turn (its audit rows join on it).
    pub correlation_id: Uuid,
    pub user: ActingUser,
    pub question: String,
}

/// The signed-in user's decision on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirm,
    Reject,
}

/// Runs turns. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    provider: Arc<dyn Provider>,
    /// The servers whose tools turns offer (those each user is admitted to).
    servers: Arc<[McpConnector]>,
    database: PgPool,
    limits: TurnLimits,
    policies: Arc<ToolPolicies>,
    /// Offer grouped tools only after `host__activate` (see [`tools`]).
    skills: bool,
}

/// How a model call ended.
enum ReplyEnd {
    Finished(FinishReason),
    Cancelled,
    OutOfTime,
    Failed(LlmError),
}

/// How a tool call ended, for the loop.
#[derive(Debug, PartialEq, Eq)]
enum CallEnd {
    Done,
    AwaitingApproval,
    Cancelled,
    OutOfTime,
    CapReached(Cap),
    /// The model repeated a call the breaker had already refused: it is stuck, and more model
    /// calls would only repeat it (the turn stops instead of spending the rest of its caps).
    Looping,
}

/// One stretch of work on a turn: a new turn, or its continuation after a decision.
struct Run<'a> {
    agent: &'a Agent,
    turn: &'a TurnContext,
    events: &'a EventLog,
    cancel: &'a CancellationToken,
    budget: Budget,
    /// The servers this stretch is connected to, by name.
    sessions: BTreeMap<String, McpSession>,
    tools: ToolSet,
    conversation: Conversation,
    /// Identical calls seen in this stretch: tool and canonical arguments → count.
    identical: HashMap<String, u32>,
    /// Call ids used in this turn, so every trace row and stored result has its own.
    call_ids: HashSet<String>,
    approvals_requested: u32,
    /// The system prompt without the skills index (which changes as groups are activated).
    system_prompt: String,
    /// Estimated tokens of tool definitions not sent thanks to skills, over this stretch.
    tokens_saved: i64,
}

impl Agent {
    /// An agent over `provider` and internal-mcp, storing in the host's `database`. `limits`
    /// should have passed [`TurnLimits::validate`]. Tools follow their annotations until
    /// [`Self::with_policies`] tightens them; [`Self::with_servers`] sets other servers.
    pub fn new(
        provider: Arc<dyn Provider>,
        internal_mcp: McpConnector,
        database: PgPool,
        limits: TurnLimits,
    ) -> Self {
        Self {
            provider,
            servers: Arc::from([internal_mcp]),
            database,
            limits,
            policies: Arc::new(ToolPolicies::from_annotations()),
            skills: false,
        }
    }

    /// The same agent with skills on or off: with skills, the model reads an index of the
    /// servers' capability groups and gets a group's tools only after `host__activate(group)`.
    pub fn with_skills(mut self, skills: bool) -> Self {
        self.skills = skills;
        self
    }

    /// The same agent over `servers` instead (their names must differ: they namespace the tools).
    pub fn with_servers(mut self, servers: Vec<McpConnector>) -> Self {
        self.servers = servers.into();
        self
    }

    /// The same agent with tool permissions tightened by configuration.
    pub fn with_policies(mut self, policies: ToolPolicies) -> Self {
        self.policies = Arc::new(policies);
        self
    }

    /// Which model answers.
    pub fn model(&self) -> &crate::llm::ModelInfo {
        self.provider.model()
    }

    pub fn limits(&self) -> &TurnLimits {
        &self.limits
    }

    /// Runs a new turn until it answers, hits a cap, waits for an approval, fails, or `cancel`
    /// fires; every step is appended to `events` (starting with `TurnStarted`, ending with
    /// `TurnFinished`); the `turns` row's status, counters and finished_at are kept current; the
    /// history of earlier turns of the conversation is rebuilt from the event log.
    pub async fn run_turn(
        &self,
        turn: &TurnContext,
        events: &EventLog,
        cancel: CancellationToken,
    ) -> Result<TurnStatus, Error> {
        let result = async {
            self.set_status(turn.turn_id, TurnStatus::Running).await?;
            let model = self.provider.model();
            let label = if model.local {
                format!("{} (local)", model.name)
            } else {
                model.name.clone()
            };
            self.append(
                events,
                turn,
                TurnEvent::TurnStarted {
                    question: turn.question.clone(),
                    model: label,
                },
            )
            .await?;
            let mut run = Run::open(self, turn, events, &cancel).await?;
            run.load_conversation().await?;
            let status = run.drive().await?;
            run.finish(status).await
        }
        .await;
        self.fail_on_error(turn, events, result).await
    }

    /// The signed-in user's decision on a pending approval of this turn (the caller checked the
    /// session, CSRF and that the turn is the user's). Confirm makes the confirming call with the
    /// stored token, only if the approval is pending, unexpired and the conversation's user's;
    /// Reject tells the model. Then the turn continues like [`Self::run_turn`]. A decision that
    /// cannot be made (already decided, expired, unknown) changes nothing, appends a `Notice`
    /// saying why, and returns the turn's current status.
    pub async fn decide(
        &self,
        turn: &TurnContext,
        approval_id: Uuid,
        decision: Decision,
        events: &EventLog,
        cancel: CancellationToken,
    ) -> Result<TurnStatus, Error> {
        let wanted = match decision {
            Decision::Confirm => "confirmed",
            Decision::Reject => "rejected",
        };
        let claim = approvals::claim(&self.database, approval_id, turn, wanted).await?;
        let (claimed, decided) = match claim {
            approvals::Claim::Refused(reason) => {
                self.append(events, turn, TurnEvent::Notice { text: reason })
                    .await?;
                return self.status_of(turn.turn_id).await;
            }
            approvals::Claim::Expired => (None, "expired"),
            approvals::Claim::Claimed(claimed) => (Some(claimed), wanted),
        };
        // The claim moved the turn back to `running`.
        let result = async {
            self.append(
                events,
                turn,
                TurnEvent::ApprovalDecided {
                    approval_id,
                    decision: decided.to_owned(),
                    decided_by: (decided != "expired").then_some(turn.user.user_id),
                },
            )
            .await?;
            let mut run = Run::open(self, turn, events, &cancel).await?;
            if let (Some(claimed), Decision::Confirm) = (&claimed, decision)
                && run.confirm(approval_id, claimed).await? == CallEnd::Cancelled
            {
                return run.finish(TurnStatus::Stopped).await;
            }
            if approvals::pending(&self.database, turn.turn_id).await? > 0 {
                return run.finish(TurnStatus::WaitingForApproval).await;
            }
            run.load_conversation().await?;
            let status = run.drive().await?;
            run.finish(status).await
        }
        .await;
        self.fail_on_error(turn, events, result).await
    }

    /// A turn whose work failed is marked failed and ends with a `TurnFinished`, as best it can.
    async fn fail_on_error(
        &self,
        turn: &TurnContext,
        events: &EventLog,
        result: Result<TurnStatus, Error>,
    ) -> Result<TurnStatus, Error> {
        let error = match result {
            Ok(status) => return Ok(status),
            Err(error) => error,
        };
        tracing::error!(turn = %turn.turn_id, %error, "a turn failed");
        let _ = self.set_status(turn.turn_id, TurnStatus::Failed).await;
        let _ = self
            .append(
                events,
                turn,
                TurnEvent::Notice {
                    text: "The assistant failed; the operators can find the reason in its log."
                        .into(),
                },
            )
            .await;
        let _ = self
            .append(
                events,
                turn,
                TurnEvent::TurnFinished {
                    status: TurnStatus::Failed,
                    model_calls: 0,
                    tool_calls: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    elapsed_ms: 0,
                },
            )
            .await;
        Err(error)
    }

    async fn append(
        &self,
        events: &EventLog,
        turn: &TurnContext,
        event: TurnEvent,
    ) -> Result<i64, Error> {
        events
            .append(turn.conversation_id, turn.turn_id, &event)
            .await
    }

    async fn set_status(&self, turn_id: Uuid, status: TurnStatus) -> Result<(), Error> {
        let finished = matches!(
            status,
            TurnStatus::Completed | TurnStatus::Stopped | TurnStatus::Failed
        );
        sqlx::query(
            "UPDATE turns SET status = $2, finished_at = CASE WHEN $3 THEN now() END WHERE id = $1",
        )
        .bind(turn_id)
        .bind(status.as_str())
        .bind(finished)
        .execute(&self.database)
        .await?;
        Ok(())
    }

    async fn status_of(&self, turn_id: Uuid) -> Result<TurnStatus, Error> {
        let status: String = sqlx::query_scalar("SELECT status FROM turns WHERE id = $1")
            .bind(turn_id)
            .fetch_one(&self.database)
            .await?;
        serde_json::from_value(Value::String(status.clone()))
            .map_err(|_| Error::Internal(format!("unknown turn status {status:?}")))
    }
}

impl<'a> Run<'a> {
    /// Connects, as the user, to every server the user is admitted to, all at once, and lists their
    /// tools. A server that cannot be reached in time is told to the user and the turn goes on
    /// without its tools; a tool whose definition changed since it was last listed is told too,
    /// and asks before it runs in this stretch.
    async fn open(
        agent: &'a Agent,
        turn: &'a TurnContext,
        events: &'a EventLog,
        cancel: &'a CancellationToken,
    ) -> Result<Run<'a>, Error> {
        let system_prompt = prompts::system_prompt(&Utc::now().format("%Y-%m-%d").to_string());
        let mut run = Run {
            agent,
            turn,
            events,
            cancel,
            budget: Budget::new(),
            sessions: BTreeMap::new(),
            tools: ToolSet::new(agent.skills),
            conversation: Conversation {
                system: Message::system(system_prompt.clone()),
                earlier: Vec::new(),
                current: Vec::new(),
                dropped_turns: 0,
            },
            identical: HashMap::new(),
            call_ids: HashSet::new(),
            approvals_requested: 0,
            system_prompt,
            tokens_saved: 0,
        };
        let connecting = agent
            .servers
            .iter()
            .filter(|connector| connector.admits(&turn.user))
            .map(|connector| async move {
                let connected = async {
                    let session = connector.connect(&turn.user, turn.correlation_id).await?;
                    match session.tools().await {
                        Ok(tools) => Ok((session, tools)),
                        Err(error) => {
                            session.close().await;
                            Err(error)
                        }
                    }
                }
                .await;
                (connector, connected)
            });
        let connected = tokio::select! {
            connected = futures_util::future::join_all(connecting) => connected,
            () = cancel.cancelled() => return Ok(run),
        };
        for (connector, connected) in connected {
            match connected {
                Ok((session, tools)) => {
                    let changed =
                        fingerprints::record(&agent.database, &connector.server, &tools).await?;
                    // The configured policies, copied only when a changed tool must ask.
                    let tightened;
                    let policies = if changed.is_empty() {
                        &*agent.policies
                    } else {
                        tightened =
                            changed
                                .iter()
                                .fold((*agent.policies).clone(), |policies, tool| {
                                    policies.tighten(
                                        &tools::qualified_name(&connector.server, tool),
                                        Permission::Ask,
                                    )
                                });
                        &tightened
                    };
                    if !changed.is_empty() {
                        tracing::warn!(server = %connector.server, tools = ?changed, "MCP tools changed their definition");
                        run.notice(format!(
                            "{} changed the definition of {} since the assistant last listed {}; {} before running in this turn.",
                            connector.server,
                            changed.join(", "),
                            if changed.len() == 1 { "it" } else { "them" },
                            if changed.len() == 1 { "it asks" } else { "each asks" },
                        ))
                        .await?;
                    }
                    run.tools.add_server(&connector.server, &tools, policies);
                    run.sessions.insert(connector.server.clone(), session);
                }
                Err(error) => {
                    tracing::warn!(server = %connector.server, %error, "an MCP server is unavailable");
                    run.notice(format!(
                        "{} is unavailable ({error}); answering without its tools.",
                        connector.server
                    ))
                    .await?;
                }
            }
        }
        Ok(run)
    }

    /// Earlier turns of the conversation and this turn so far, from the event log.
    async fn load_conversation(&mut self) -> Result<(), Error> {
        let earlier: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM turns
              WHERE conversation_id = $1 AND id <> $2
                AND created_at <= (SELECT created_at FROM turns WHERE id = $2)
              ORDER BY created_at, id",
        )
        .bind(self.turn.conversation_id)
        .bind(self.turn.turn_id)
        .fetch_all(&self.agent.database)
        .await?;
        for turn_id in earlier {
            let events = self.events.read_turn(turn_id).await?;
            let events: Vec<TurnEvent> = events.into_iter().map(|stored| stored.event).collect();
            self.replay_activations(&events);
            let messages = history::turn_messages(&events);
            if !messages.is_empty() {
                self.conversation.earlier.push(messages);
            }
        }
        let current: Vec<TurnEvent> = self
            .events
            .read_turn(self.turn.turn_id)
            .await?
            .into_iter()
            .map(|stored| stored.event)
            .collect();
        for event in &current {
            if let TurnEvent::ToolCallStarted { call_id, .. } = event {
                self.call_ids.insert(call_id.clone());
            }
        }
        self.replay_activations(&current);
        self.conversation.current = history::turn_messages(&current);
        if self.conversation.current.is_empty() {
            self.conversation
                .current
                .push(Message::user(self.turn.question.clone()));
        }
        Ok(())
    }

    /// Groups the model activated earlier in the conversation stay active.
    fn replay_activations(&mut self, events: &[TurnEvent]) {
        let mut asked: HashMap<&str, &str> = HashMap::new();
        for event in events {
            match event {
                TurnEvent::ToolCallStarted {
                    call_id,
                    server,
                    tool,
                    arguments,
                } if server == HOST && tool == tools::ACTIVATE => {
                    if let Some(group) = arguments.get("group").and_then(Value::as_str) {
                        asked.insert(call_id, group);
                    }
                }
                TurnEvent::ToolCallFinished { call_id, outcome }
                    if outcome.status == CallStatus::Ok =>
                {
                    if let Some(group) = asked.remove(call_id.as_str()) {
                        let _ = self.tools.activate(group);
                    }
                }
                _ => {}
            }
        }
    }

    /// Model call, tools, repeat, until the turn settles.
    async fn drive(&mut self) -> Result<TurnStatus, Error> {
        let limits = self.agent.limits;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(TurnStatus::Stopped);
            }
            if let Some(cap) = self.budget.before_model_call(&limits) {
                return self.capped(cap).await;
            }
            let specs = self.tools.specs();
            self.conversation.system = Message::system(match self.tools.index() {
                Some(index) => {
                    self.tokens_saved += history::estimate_tools(&self.tools.all_specs()) as i64
                        - history::estimate_tools(&specs) as i64
                        - (index.len() / 4) as i64;
                    format!("{}\n\n{index}", self.system_prompt)
                }
                None => self.system_prompt.clone(),
            });
            let window = self.agent.provider.model().context_window as usize;
            let room = window
                .saturating_sub(limits.max_output_tokens as usize)
                .saturating_sub(window / 10);
            let (estimated_input, specs) = self.conversation.fit_with_tools(room, &mut self.tools);
            let request = Request {
                messages: self.conversation.messages(),
                tools: specs,
                max_output_tokens: limits.max_output_tokens,
            };
            self.budget.model_calls += 1;
            self.count("model_calls").await?;
            let (text, calls, usage, end) = self.stream_reply(request).await?;
            let calls = self.unique_ids(calls);
            let usage = usage.unwrap_or(Usage {
                input_tokens: estimated_input as u64,
                output_tokens: ((text.len()
                    + calls.iter().map(|call| call.arguments.len()).sum::<usize>())
                    / 4) as u64,
            });
            self.budget.input_tokens += usage.input_tokens;
            self.budget.output_tokens += usage.output_tokens;
            if !text.is_empty() || !calls.is_empty() {
                self.conversation
                    .current
                    .push(Message::assistant(text, calls.clone()));
            }
            match end {
                ReplyEnd::Cancelled => return Ok(TurnStatus::Stopped),
                ReplyEnd::OutOfTime => return self.capped(Cap::WallTime).await,
                ReplyEnd::Failed(error) => {
                    tracing::warn!(turn = %self.turn.turn_id, %error, "the model failed");
                    self.notice(format!("The model failed: {error}")).await?;
                    return Ok(TurnStatus::Failed);
                }
                ReplyEnd::Finished(reason) => {
                    if calls.is_empty() {
                        if reason == FinishReason::Length {
                            self.notice(format!(
                                "The answer was cut at the limit of {} tokens.",
                                limits.max_output_tokens
                            ))
                            .await?;
                        }
                        return Ok(TurnStatus::Completed);
                    }
                }
            }
            let mut stopped_by = None;
            let mut looping = false;
            for call in &calls {
                let end = self.handle_call(call).await?;
                match end {
                    CallEnd::Done | CallEnd::AwaitingApproval => {}
                    CallEnd::CapReached(cap) => stopped_by = stopped_by.or(Some(cap)),
                    CallEnd::Looping => looping = true,
                    CallEnd::Cancelled => return Ok(TurnStatus::Stopped),
                    CallEnd::OutOfTime => return self.capped(Cap::WallTime).await,
                }
            }
            if let Some(cap) = stopped_by {
                return self.capped(cap).await;
            }
            if looping {
                return Ok(TurnStatus::Stopped);
            }
            if self.approvals_requested > 0 {
                return Ok(TurnStatus::WaitingForApproval);
            }
        }
    }

    /// Streams one model reply, storing its text as it comes.
    async fn stream_reply(
        &mut self,
        request: Request,
    ) -> Result<(String, Vec<ToolCall>, Option<Usage>, ReplyEnd), Error> {
        let limits = self.agent.limits;
        let mut stream = self.agent.provider.stream(request);
        let mut pending = Coalescer::new(limits.text_flush_interval, limits.text_flush_chars);
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut usage: Option<Usage> = None;
        let deadline = self.budget.deadline(&limits);
        let end = loop {
            let flush_at = pending.due_at();
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break ReplyEnd::Cancelled,
                () = tokio::time::sleep_until(deadline) => break ReplyEnd::OutOfTime,
                () = sleep_until_some(flush_at) => {
                    self.flush_text(&mut pending).await?;
                    continue;
                }
                next = stream.next() => next,
            };
            match next {
                None => break ReplyEnd::Finished(FinishReason::Other),
                Some(Ok(StreamEvent::TextDelta(delta))) => {
                    text.push_str(&delta);
                    pending.push(&delta);
                    if pending.due() {
                        self.flush_text(&mut pending).await?;
                    }
                }
                Some(Ok(StreamEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(StreamEvent::Usage(reported))) => {
                    let total = usage.get_or_insert_with(Usage::default);
                    total.input_tokens += reported.input_tokens;
                    total.output_tokens += reported.output_tokens;
                }
                Some(Ok(StreamEvent::Finished(reason))) => break ReplyEnd::Finished(reason),
                Some(Err(error)) => break ReplyEnd::Failed(error),
            }
        };
        // Dropping the stream drops the model's HTTP request.
        drop(stream);
        self.flush_text(&mut pending).await?;
        Ok((text, calls, usage, end))
    }

    async fn flush_text(&self, pending: &mut Coalescer) -> Result<(), Error> {
        if let Some(text) = pending.take() {
            self.append(TurnEvent::Text { text }).await?;
        }
        Ok(())
    }

    /// Gives every call an id of its own in this turn (some servers send none, or reuse them).
    fn unique_ids(&mut self, calls: Vec<ToolCall>) -> Vec<ToolCall> {
        calls
            .into_iter()
            .map(|mut call| {
                let usable = !call.id.trim().is_empty()
                    && call.id.len() <= 64
                    && !call.id.starts_with("approval-")
                    && !self.call_ids.contains(&call.id);
                if !usable {
                    call.id = format!("call-{}", Uuid::new_v4().simple());
                }
                self.call_ids.insert(call.id.clone());
                call
            })
            .collect()
    }

    /// Checks, runs and records one tool call; its result joins the conversation.
    async fn handle_call(&mut self, call: &ToolCall) -> Result<CallEnd, Error> {
        let (server, tool) = tools::split_name(&call.name).unwrap_or(("", call.name.as_str()));
        let (server, tool) = (server.to_owned(), tool.to_owned());
        let parsed = parse_arguments(&call.arguments);
        let arguments_for_trace = match &parsed {
            Ok(arguments) => Value::Object(arguments.clone()),
            Err(_) => Value::String(call.arguments.clone()),
        };
        self.append(TurnEvent::ToolCallStarted {
            call_id: call.id.clone(),
            server: server.clone(),
            tool: tool.clone(),
            arguments: arguments_for_trace.clone(),
        })
        .await?;

        if let Some(cap) = self.budget.before_tool_call(&self.agent.limits) {
            let message = format!(
                "Not run: {}",
                self.budget.cap_notice(cap, &self.agent.limits)
            );
            self.refuse(call, &tool, &arguments_for_trace, &message)
                .await?;
            return Ok(CallEnd::CapReached(cap));
        }
        self.budget.tool_calls += 1;
        self.count("tool_calls").await?;

        let arguments = match parsed {
            Ok(arguments) => arguments,
            Err(problem) => {
                let message = format!(
                    "Refused: the arguments are not a JSON object ({problem}). Send one JSON object that matches the tool's schema."
                );
                self.refuse(call, &tool, &arguments_for_trace, &message)
                    .await?;
                return Ok(CallEnd::Done);
            }
        };
        if server == HOST && tool == READ_RESULT {
            return self.read_result(call, &arguments).await;
        }
        if server == HOST && tool == tools::ACTIVATE && self.tools.index().is_some() {
            return self.activate(call, &arguments).await;
        }
        let offered = self.tools.get(&call.name).cloned();
        if let Some(OfferedTool {
            group: Some(group), ..
        }) = offered
            .as_ref()
            .filter(|offered| !self.tools.is_offered(offered))
        {
            let message = format!(
                "Refused: {} belongs to the capability group {group:?}, which is not active. Call host__activate \
                 with group {group:?} first.",
                call.name
            );
            self.refuse(call, &tool, &arguments_for_trace, &message)
                .await?;
            return Ok(CallEnd::Done);
        }
        let Some(offered) = offered else {
            let message = format!(
                "Refused: there is no tool named {:?}. The tools are: {}.",
                call.name,
                self.tools.names().join(", ")
            );
            self.refuse(call, &tool, &arguments_for_trace, &message)
                .await?;
            return Ok(CallEnd::Done);
        };
        if arguments.contains_key(CONFIRMATION_TOKEN_ARGUMENT) {
            self.refuse(
                call,
                &tool,
                &arguments_for_trace,
                prompts::SELF_CONFIRMATION_REFUSED,
            )
            .await?;
            return Ok(CallEnd::Done);
        }
        let arguments_value = Value::Object(arguments.clone());
        let errors = schema::validate(&offered.schema, &arguments_value);
        if !errors.is_empty() {
            let message = format!(
                "Refused before the call: the arguments do not match {}'s schema:\n- {}\nFix them and call again.",
                call.name,
                errors.join("\n- ")
            );
            self.refuse(call, &tool, &arguments_for_trace, &message)
                .await?;
            return Ok(CallEnd::Done);
        }
        let repeated = self
            .identical
            .entry(format!("{}\n{}", call.name, canonical(&arguments_value)))
            .or_insert(0);
        *repeated += 1;
        if *repeated > self.agent.limits.max_identical_calls {
            let message = format!(
                "Refused: this exact call ({} with the same arguments) already ran {} times in this turn and its \
                 result will not change. Use the earlier result, change the arguments, or answer with what you have.",
                call.name,
                *repeated - 1
            );
            let refused_before = *repeated > self.agent.limits.max_identical_calls + 1;
            self.refuse(call, &tool, &arguments_for_trace, &message)
                .await?;
            if refused_before {
                self.notice(format!(
                    "The model called {} with the same arguments again after it was told the result would not \
                     change, so the turn was stopped. Ask again in other words.",
                    call.name
                ))
                .await?;
                return Ok(CallEnd::Looping);
            }
            self.notice(format!("A repeated call to {} was stopped.", call.name))
                .await?;
            return Ok(CallEnd::Done);
        }
        if offered.permission == Permission::Ask && !offered.two_step {
            return self
                .ask_before_calling(call, &offered, &arguments_value)
                .await;
        }
        self.call_tool(call, &offered, arguments).await
    }

    /// Makes the call on the server and records its result, or the approval its plan needs.
    async fn call_tool(
        &mut self,
        call: &ToolCall,
        offered: &OfferedTool,
        arguments: Map<String, Value>,
    ) -> Result<CallEnd, Error> {
        let arguments_value = Value::Object(arguments.clone());
        let Some(session) = self.sessions.get(&offered.server) else {
            let message = format!("Not run: {} is unavailable.", offered.server);
            self.record(
                call,
                trace::record_without_result(
                    CallStatus::TransportError,
                    &offered.tool,
                    &arguments_value,
                    &message,
                    0,
                ),
            )
            .await?;
            return Ok(CallEnd::Done);
        };
        let started = std::time::Instant::now();
        let deadline = self.budget.deadline(&self.agent.limits);
        // Dropping the call's future (Stop, or the turn's time is up) cancels it on the server.
        let outcome = tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            () = tokio::time::sleep_until(deadline) => Some(None),
            outcome = session.call(&offered.tool, arguments) => Some(Some(outcome)),
        };
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match outcome {
            Some(Some(Ok(outcome))) => outcome,
            None => {
                let message = "Cancelled: the user stopped the turn while this call ran.";
                return self
                    .record_transport_failure(
                        call,
                        &offered.tool,
                        &arguments_value,
                        message,
                        elapsed,
                    )
                    .await
                    .map(|()| CallEnd::Cancelled);
            }
            Some(None) => {
                let message = "Cancelled: the turn reached its time limit while this call ran.";
                return self
                    .record_transport_failure(
                        call,
                        &offered.tool,
                        &arguments_value,
                        message,
                        elapsed,
                    )
                    .await
                    .map(|()| CallEnd::OutOfTime);
            }
            Some(Some(Err(error))) => {
                let message = format!("The call failed: {error}");
                return self
                    .record_transport_failure(
                        call,
                        &offered.tool,
                        &arguments_value,
                        &message,
                        elapsed,
                    )
                    .await
                    .map(|()| CallEnd::Done);
            }
        };
        let confirmation = outcome.confirmation();
        let token_text = confirmation
            .as_ref()
            .map(|confirmation| confirmation.token.clone())
            .unwrap_or_default();
        let secrets: Vec<&str> = vec![token_text.as_str()];
        let recorded = trace::record_result(
            &call.id,
            &offered.tool,
            &arguments_value,
            &outcome,
            self.agent.limits.max_result_chars,
            &secrets,
        );
        let Some(Confirmation { token, expires_at }) = confirmation.filter(|_| !outcome.is_error)
        else {
            self.record(call, recorded).await?;
            return Ok(CallEnd::Done);
        };
        // A plan: the token goes into the approvals table only.
        let plan = outcome
            .structured
            .as_ref()
            .map(|structured| {
                structured
                    .get("plan")
                    .cloned()
                    .unwrap_or_else(|| structured.clone())
            })
            .unwrap_or_else(|| Value::String(recorded.outcome.text.clone()));
        let plan = serde_json::from_str(&trace::withhold(&plan.to_string(), &secrets))
            .unwrap_or(Value::Null);
        let expires_at = expires_at.unwrap_or_else(|| self.default_expiry());
        self.request_approval(
            call,
            offered,
            &arguments_value,
            plan,
            Some(token.as_str()),
            expires_at,
            recorded.outcome.duration_ms,
        )
        .await
    }

    /// A changing tool without a server-side plan: the user confirms before the host calls it.
    async fn ask_before_calling(
        &mut self,
        call: &ToolCall,
        offered: &OfferedTool,
        arguments: &Value,
    ) -> Result<CallEnd, Error> {
        let plan = json!({
            "action": format!("call {} on {}", offered.tool, offered.server),
            "arguments": arguments,
        });
        let expires_at = self.default_expiry();
        self.request_approval(call, offered, arguments, plan, None, expires_at, 0)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn request_approval(
        &mut self,
        call: &ToolCall,
        offered: &OfferedTool,
        arguments: &Value,
        plan: Value,
        token: Option<&str>,
        expires_at: chrono::DateTime<Utc>,
        duration_ms: u64,
    ) -> Result<CallEnd, Error> {
        let approval_id = approvals::insert(
            &self.agent.database,
            &approvals::NewApproval {
                turn_id: self.turn.turn_id,
                call_id: &call.id,
                server: &offered.server,
                tool: &offered.tool,
                arguments,
                plan: &plan,
                token,
                expires_at,
            },
        )
        .await?;
        self.approvals_requested += 1;
        self.append(TurnEvent::ApprovalRequested {
            approval_id,
            server: offered.server.clone(),
            tool: offered.tool.clone(),
            plan: plan.clone(),
            expires_at,
        })
        .await?;
        let text = format!(
            "{}\nThe plan shown to the user:\n{plan}",
            prompts::WAITING_FOR_APPROVAL
        );
        let recorded = trace::record_without_result(
            CallStatus::AwaitingApproval,
            &offered.tool,
            arguments,
            &text,
            duration_ms,
        );
        self.record(call, recorded).await?;
        Ok(CallEnd::AwaitingApproval)
    }

    /// The confirming call, made by the host with the stored token after the user confirmed.
    async fn confirm(
        &mut self,
        approval_id: Uuid,
        claimed: &approvals::Claimed,
    ) -> Result<CallEnd, Error> {
        let call_id = history::approval_call_id(approval_id);
        let arguments = claimed.arguments.as_object().cloned().unwrap_or_default();
        self.append(TurnEvent::ToolCallStarted {
            call_id: call_id.clone(),
            server: claimed.server.clone(),
            tool: claimed.tool.clone(),
            arguments: claimed.arguments.clone(),
        })
        .await?;
        let mut with_token = arguments;
        if let Some(token) = &claimed.token {
            with_token.insert(
                CONFIRMATION_TOKEN_ARGUMENT.to_owned(),
                Value::String(token.clone()),
            );
        }
        let secrets: Vec<&str> = claimed.token.as_deref().into_iter().collect();
        let recorded = match self.sessions.get(&claimed.server) {
            None => trace::record_without_result(
                CallStatus::TransportError,
                &claimed.tool,
                &claimed.arguments,
                &format!(
                    "Not run: {} is unavailable; nothing was changed.",
                    claimed.server
                ),
                0,
            ),
            Some(session) => {
                let outcome = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => None,
                    outcome = session.call(&claimed.tool, with_token) => Some(outcome),
                };
                match outcome {
                    None => {
                        let recorded = trace::record_without_result(
                            CallStatus::TransportError,
                            &claimed.tool,
                            &claimed.arguments,
                            "Cancelled: the user stopped the turn while the confirmed change was being made.",
                            0,
                        );
                        self.append(TurnEvent::ToolCallFinished {
                            call_id,
                            outcome: recorded.outcome,
                        })
                        .await?;
                        return Ok(CallEnd::Cancelled);
                    }
                    Some(Err(error)) => trace::record_without_result(
                        CallStatus::TransportError,
                        &claimed.tool,
                        &claimed.arguments,
                        &format!(
                            "The confirming call failed: {}",
                            trace::withhold(&error.to_string(), &secrets)
                        ),
                        0,
                    ),
                    Some(Ok(outcome)) => trace::record_result(
                        &call_id,
                        &claimed.tool,
                        &claimed.arguments,
                        &outcome,
                        self.agent.limits.max_result_chars,
                        &secrets,
                    ),
                }
            }
        };
        self.budget.tool_calls += 1;
        self.count("tool_calls").await?;
        self.store_full_result(&call_id, &recorded).await?;
        self.append(TurnEvent::ToolCallFinished {
            call_id,
            outcome: recorded.outcome,
        })
        .await?;
        Ok(CallEnd::Done)
    }

    /// `host__activate`: offers a capability group's tools from the next model call on.
    async fn activate(
        &mut self,
        call: &ToolCall,
        arguments: &Map<String, Value>,
    ) -> Result<CallEnd, Error> {
        let arguments_value = Value::Object(arguments.clone());
        let errors = schema::validate(&self.tools.activate_spec().parameters, &arguments_value);
        if !errors.is_empty() {
            let message = format!("Refused: {}", errors.join("; "));
            self.refuse(call, tools::ACTIVATE, &arguments_value, &message)
                .await?;
            return Ok(CallEnd::Done);
        }
        let group = arguments
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let text = match self.tools.activate(group) {
            Ok(found) if found.instructions.is_empty() => format!(
                "The group {group} is active; its tools are offered from your next step on: {}.",
                found.tools.join(", ")
            ),
            Ok(found) => format!(
                "The group {group} is active; its tools are offered from your next step on: {}.\nHow to use \
                 them: {}",
                found.tools.join(", "),
                found.instructions
            ),
            Err(problem) => {
                self.refuse(
                    call,
                    tools::ACTIVATE,
                    &arguments_value,
                    &format!("Refused: {problem}"),
                )
                .await?;
                return Ok(CallEnd::Done);
            }
        };
        let recorded = trace::record_without_result(
            CallStatus::Ok,
            tools::ACTIVATE,
            &arguments_value,
            &text,
            0,
        );
        self.record(call, recorded).await?;
        Ok(CallEnd::Done)
    }

    /// `host__read_result`: the next page of a result of this conversation.
    async fn read_result(
        &mut self,
        call: &ToolCall,
        arguments: &Map<String, Value>,
    ) -> Result<CallEnd, Error> {
        let arguments_value = Value::Object(arguments.clone());
        let errors = schema::validate(&tools::read_result_spec().parameters, &arguments_value);
        if !errors.is_empty() {
            let message = format!("Refused: {}", errors.join("; "));
            self.refuse(call, READ_RESULT, &arguments_value, &message)
                .await?;
            return Ok(CallEnd::Done);
        }
        let wanted = arguments
            .get("call_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let offset = arguments
            .get("offset")
            .and_then(Value::as_f64)
            .map(|offset| offset as usize)
            .unwrap_or(0);
        let full: Option<String> = sqlx::query_scalar(
            "SELECT r.full_text FROM tool_results r JOIN turns t ON t.id = r.turn_id
              WHERE t.conversation_id = $1 AND r.call_id = $2
              ORDER BY r.created_at DESC LIMIT 1",
        )
        .bind(self.turn.conversation_id)
        .bind(wanted)
        .fetch_optional(&self.agent.database)
        .await?;
        let Some(full) = full else {
            let message =
                format!("Refused: no result with call_id {wanted:?} in this conversation.");
            self.refuse(call, READ_RESULT, &arguments_value, &message)
                .await?;
            return Ok(CallEnd::Done);
        };
        let total = full.chars().count();
        let page: String = full
            .chars()
            .skip(offset)
            .take(self.agent.limits.max_result_chars)
            .collect();
        let end = offset.saturating_add(page.chars().count());
        let text = if end < total {
            format!(
                "{page}\n[Characters {offset} to {end} of {total}. Continue with offset {end}.]"
            )
        } else {
            format!("{page}\n[Characters {offset} to {total} of {total}: the end of the result.]")
        };
        let mut recorded =
            trace::record_without_result(CallStatus::Ok, READ_RESULT, &arguments_value, &text, 0);
        recorded.outcome.truncated = end < total;
        self.record(call, recorded).await?;
        Ok(CallEnd::Done)
    }

    /// A call the host did not make: the model reads why.
    async fn refuse(
        &mut self,
        call: &ToolCall,
        tool: &str,
        arguments: &Value,
        message: &str,
    ) -> Result<(), Error> {
        self.record(
            call,
            trace::record_without_result(CallStatus::Refused, tool, arguments, message, 0),
        )
        .await
    }

    /// Records a call that got no result (stopped, out of time, or the server unreachable).
    async fn record_transport_failure(
        &mut self,
        call: &ToolCall,
        tool: &str,
        arguments: &Value,
        message: &str,
        elapsed_ms: u64,
    ) -> Result<(), Error> {
        let recorded = trace::record_without_result(
            CallStatus::TransportError,
            tool,
            arguments,
            message,
            elapsed_ms,
        );
        self.record(call, recorded).await
    }

    /// Stores a finished call (trace row, full result) and hands its result to the model.
    async fn record(&mut self, call: &ToolCall, recorded: Recorded) -> Result<(), Error> {
        self.store_full_result(&call.id, &recorded).await?;
        self.append(TurnEvent::ToolCallFinished {
            call_id: call.id.clone(),
            outcome: recorded.outcome,
        })
        .await?;
        self.conversation
            .current
            .push(Message::tool_result(call.id.clone(), recorded.for_model));
        Ok(())
    }

    /// Keeps a call's whole result (for `host__read_result`); a cut one makes paging available.
    async fn store_full_result(&mut self, call_id: &str, recorded: &Recorded) -> Result<(), Error> {
        if recorded.outcome.truncated {
            self.tools.allow_paging();
        }
        sqlx::query(
            "INSERT INTO tool_results (turn_id, call_id, full_text) VALUES ($1, $2, $3)
             ON CONFLICT (turn_id, call_id) DO NOTHING",
        )
        .bind(self.turn.turn_id)
        .bind(call_id)
        .bind(&recorded.full_text)
        .execute(&self.agent.database)
        .await?;
        Ok(())
    }

    fn default_expiry(&self) -> chrono::DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.agent.limits.approval_lifetime)
                .unwrap_or(chrono::Duration::minutes(5))
    }

    async fn capped(&mut self, cap: Cap) -> Result<TurnStatus, Error> {
        let notice = self.budget.cap_notice(cap, &self.agent.limits);
        self.notice(notice).await?;
        Ok(TurnStatus::Stopped)
    }

    async fn notice(&self, text: String) -> Result<(), Error> {
        self.append(TurnEvent::Notice { text }).await.map(|_| ())
    }

    async fn append(&self, event: TurnEvent) -> Result<i64, Error> {
        self.events
            .append(self.turn.conversation_id, self.turn.turn_id, &event)
            .await
    }

    /// Adds one to a counter column of the turn (`model_calls` or `tool_calls`).
    async fn count(&self, column: &str) -> Result<(), Error> {
        let statement = match column {
            "model_calls" => "UPDATE turns SET model_calls = model_calls + 1 WHERE id = $1",
            _ => "UPDATE turns SET tool_calls = tool_calls + 1 WHERE id = $1",
        };
        sqlx::query(statement)
            .bind(self.turn.turn_id)
            .execute(&self.agent.database)
            .await?;
        Ok(())
    }

    /// Ends this stretch: closes the session, sets the status, appends `TurnFinished`.
    async fn finish(mut self, status: TurnStatus) -> Result<TurnStatus, Error> {
        if status == TurnStatus::Stopped && self.cancel.is_cancelled() {
            self.notice("Stopped by the user.".into()).await?;
        }
        let sessions = std::mem::take(&mut self.sessions);
        futures_util::future::join_all(sessions.into_values().map(McpSession::close)).await;
        if self.tools.index().is_some() {
            tracing::info!(
                turn = %self.turn.turn_id,
                tokens_saved = self.tokens_saved,
                model_calls = self.budget.model_calls,
                "skills: tool definitions not sent"
            );
        }
        self.agent.set_status(self.turn.turn_id, status).await?;
        self.append(TurnEvent::TurnFinished {
            status,
            model_calls: self.budget.model_calls,
            tool_calls: self.budget.tool_calls,
            input_tokens: self.budget.input_tokens,
            output_tokens: self.budget.output_tokens,
            elapsed_ms: self.budget.elapsed_ms(),
        })
        .await?;
        Ok(status)
    }
}

/// The arguments as the model wrote them: an empty string is no arguments; anything else must be
/// one JSON object.
fn parse_arguments(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(arguments)) => Ok(arguments),
        Ok(other) => Err(format!(
            "got {}",
            other.to_string().chars().take(80).collect::<String>()
        )),
        Err(error) => Err(format!("invalid JSON: {error}")),
    }
}

/// JSON with object keys sorted at every level, so equal arguments compare equal.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (key.clone(), sorted(value)))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_one_json_object() {
        assert_eq!(parse_arguments(""), Ok(Map::new()));
        assert!(parse_arguments("{\"sql\": \"SELECT 1\"}").is_ok());
        assert!(parse_arguments("[1]").unwrap_err().contains("got [1]"));
        assert!(
            parse_arguments("{\"sql\": ")
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn equal_arguments_compare_equal_whatever_their_order() {
        let one: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
        assert_eq!(canonical(&one), canonical(&two));
    }
}
