//! The agent loop against real parts: PostgreSQL from the harness, the real internal-mcp served
//! over HTTP, and a scripted model (a `Provider` that replays a script of stream events and
//! records every request it got). Covers a real select and its answer, schema checks, the breaker,
//! caps, Stop during a slow tool, approvals (confirm once, reject, never by the model itself), and
//! that a confirmation token never reaches an event or the model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use internal_host::AppState;
use internal_host::agent::{Agent, Decision, TurnContext, TurnLimits};
use internal_host::credentials::ActingUser;
use internal_host::events::{CallStatus, EventLog, TurnEvent, TurnStatus};
use internal_host::llm::{
    EventStream, FinishReason, ModelInfo, Provider, Request, Role, StreamEvent, ToolCall, Usage,
};
use serde_json::{Value, json};
use test_harness::TestDatabase;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{
    InternalMcp, host_config, new_conversation, new_turn, seeded_database, spawn_internal_mcp, user,
};

/// One scripted reply: fixed events, or events computed from the request (to replay what the
/// model was shown).
pub(crate) enum Reply {
    Events(Vec<StreamEvent>),
    FromRequest(Respond),
    /// Like `FromRequest`, with a pause before each event.
    Delayed(Respond, Duration),
}

/// A reply computed from the request the model got.
type Respond = Box<dyn Fn(&Request) -> Vec<StreamEvent> + Send + Sync>;

/// A model that follows a script and records what it was asked.
pub(crate) struct ScriptedModel {
    info: ModelInfo,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Request>>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ScriptedModel")
    }
}

impl Provider for ScriptedModel {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn stream(&self, request: Request) -> EventStream {
        let reply = self.script.lock().unwrap().pop_front();
        let (events, delay) = match reply {
            Some(Reply::Events(events)) => (events, None),
            Some(Reply::FromRequest(make)) => (make(&request), None),
            Some(Reply::Delayed(make, delay)) => (make(&request), Some(delay)),
            None => (answer("The script is over."), None),
        };
        self.requests.lock().unwrap().push(request);
        let events = futures_util::stream::iter(events.into_iter().map(Ok));
        match delay {
            None => events.boxed(),
            Some(delay) => events
                .then(move |event| async move {
                    tokio::time::sleep(delay).await;
                    event
                })
                .boxed(),
        }
    }
}

impl ScriptedModel {
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

// By value, so each call reads as one `json!` literal.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn call(id: &str, name: &str, arguments: Value) -> StreamEvent {
    StreamEvent::ToolCall(ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_string(),
    })
}

pub(crate) fn calls(events: Vec<StreamEvent>) -> Reply {
    let mut events = events;
    events.push(StreamEvent::Usage(Usage {
        input_tokens: 100,
        output_tokens: 10,
    }));
    events.push(StreamEvent::Finished(FinishReason::ToolCalls));
    Reply::Events(events)
}

pub(crate) fn answer(text: &str) -> Vec<StreamEvent> {
    vec![
        StreamEvent::TextDelta(text.to_owned()),
        StreamEvent::Finished(FinishReason::Stop),
    ]
}

pub(crate) struct Harness {
    pub(crate) database: TestDatabase,
    pub(crate) state: AppState,
    pub(crate) agent: Agent,
    pub(crate) events: EventLog,
    pub(crate) model: Arc<ScriptedModel>,
    pub(crate) user: ActingUser,
    pub(crate) conversation_id: Uuid,
    internal_mcp: InternalMcp,
}

pub(crate) async fn harness(handle: &str, limits: TurnLimits, script: Vec<Reply>) -> Harness {
    let database = seeded_database().await;
    let (url, internal_mcp) = spawn_internal_mcp(&database).await;
    let state = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts");
    let model = Arc::new(ScriptedModel {
        info: ModelInfo {
            provider: "scripted".into(),
            name: "scripted-model".into(),
            context_window: 32_000,
            local: false,
        },
        script: Mutex::new(script.into()),
        requests: Mutex::new(Vec::new()),
    });
    limits.validate().expect("valid limits");
    let agent = Agent::new(
        model.clone(),
        state.internal_mcp().clone(),
        state.database().clone(),
        limits,
    );
    let acting = user(&database.pool, "acme", handle).await;
    let conversation_id = new_conversation(state.database(), &acting, "test").await;
    Harness {
        events: EventLog::new(state.database().clone()),
        database,
        state,
        agent,
        model,
        user: acting,
        conversation_id,
        internal_mcp,
    }
}

impl Harness {
    /// A new turn row (as the web layer creates it) and its context.
    pub(crate) async fn turn(&self, question: &str) -> TurnContext {
        new_turn(
            self.state.database(),
            self.conversation_id,
            &self.user,
            question,
        )
        .await
    }

    pub(crate) async fn run(&self, turn: &TurnContext) -> TurnStatus {
        self.agent
            .run_turn(turn, &self.events, CancellationToken::new())
            .await
            .expect("the turn runs")
    }

    pub(crate) async fn events_of(&self, turn: &TurnContext) -> Vec<TurnEvent> {
        self.events
            .read_turn(turn.turn_id)
            .await
            .expect("the events")
            .into_iter()
            .map(|stored| stored.event)
            .collect()
    }

    /// internal-mcp's audit rows of a turn: (tool, message).
    pub(crate) async fn audited(&self, turn: &TurnContext) -> Vec<(String, Option<String>)> {
        self.internal_mcp.write_audit_records().await;
        sqlx::query_as(
            "SELECT tool, message FROM internal_mcp_audit_log WHERE credential_id LIKE $1 || '/%' ORDER BY id",
        )
        .bind(turn.correlation_id.to_string())
        .fetch_all(&self.database.pool)
        .await
        .expect("the audit rows")
    }

    async fn notes(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM incident_events WHERE kind = 'note'")
            .fetch_one(&self.database.pool)
            .await
            .expect("the notes")
    }

    async fn incident(&self) -> String {
        let number: i32 = sqlx::query_scalar(
            "SELECT i.number FROM incidents i JOIN organizations o ON o.id = i.organization_id
              WHERE o.slug = 'acme' ORDER BY i.number LIMIT 1",
        )
        .fetch_one(&self.database.pool)
        .await
        .expect("an incident");
        format!("INC-{number}")
    }
}

fn kinds(events: &[TurnEvent]) -> Vec<&'static str> {
    events.iter().map(TurnEvent::kind).collect()
}

pub(crate) fn finished_calls(events: &[TurnEvent]) -> Vec<(String, CallStatus, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            TurnEvent::ToolCallFinished { call_id, outcome } => {
                Some((call_id.clone(), outcome.status, outcome.text.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The status of each finished call, in order.
fn call_statuses(events: &[TurnEvent]) -> Vec<CallStatus> {
    finished_calls(events)
        .into_iter()
        .map(|(_, status, _)| status)
        .collect()
}

pub(crate) fn notices(events: &[TurnEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            TurnEvent::Notice { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The text of the tool results the model got in `request`.
pub(crate) fn tool_results(request: &Request) -> Vec<(String, String)> {
    request
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| {
            (
                message.tool_call_id.clone().unwrap_or_default(),
                message.content.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_turn_runs_a_real_select_and_answers_and_the_next_turn_remembers_it() {
    let mut deltas: Vec<StreamEvent> =
        "There are several incidents in your organisation, as the query shows."
            .split_inclusive(' ')
            .map(|word| StreamEvent::TextDelta(word.to_owned()))
            .collect();
    let delta_count = deltas.len();
    deltas.push(StreamEvent::Finished(FinishReason::Stop));
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![
            calls(vec![call(
                "c1",
                "internal-mcp__run_select",
                json!({"sql": "SELECT count(*) AS incidents FROM incidents"}),
            )]),
            Reply::Events(deltas),
            Reply::Events(answer("As I said: several.")),
        ],
    )
    .await;
    let turn = harness.turn("How many incidents do we have?").await;
    let started = Instant::now();
    assert_eq!(harness.run(&turn).await, TurnStatus::Completed);
    eprintln!(
        "a turn with one real select: {:?} (scripted model)",
        started.elapsed()
    );

    let events = harness.events_of(&turn).await;
    let kinds = kinds(&events);
    assert_eq!(
        kinds[..3],
        ["turn_started", "tool_call_started", "tool_call_finished"]
    );
    assert_eq!(kinds.last(), Some(&"turn_finished"));
    let text_events = kinds.iter().filter(|kind| **kind == "text").count();
    eprintln!("{delta_count} text deltas stored as {text_events} text event(s)");
    assert!(text_events >= 1 && text_events < delta_count);
    let Some(TurnEvent::ToolCallFinished { outcome, .. }) = events.get(2) else {
        panic!("{events:?}");
    };
    assert_eq!(outcome.status, CallStatus::Ok, "{}", outcome.text);
    assert_eq!(outcome.rows, Some(1));
    assert_eq!(
        outcome.sql.as_deref(),
        Some("SELECT count(*) AS incidents FROM incidents")
    );
    let answer_text: String = events
        .iter()
        .filter_map(|event| match event {
            TurnEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        answer_text.starts_with("There are several incidents"),
        "{answer_text}"
    );

    // The model got the real rows back, under the call's id, and was offered namespaced tools
    // without any confirmation-token argument.
    let requests = harness.model.requests();
    assert_eq!(requests.len(), 2);
    let results = tool_results(&requests[1]);
    assert_eq!(results[0].0, "c1");
    assert!(results[0].1.contains("\"incidents\""), "{}", results[0].1);
    let offered: Vec<&str> = requests[0]
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    assert!(offered.contains(&"internal-mcp__run_select"), "{offered:?}");
    assert!(
        offered.contains(&"internal-mcp__annotate_incident"),
        "{offered:?}"
    );
    assert!(
        !offered.contains(&"host__read_result"),
        "nothing was cut yet, so there is nothing to page: {offered:?}"
    );
    let tools_json = serde_json::to_string(&requests[0].tools).unwrap();
    assert!(!tools_json.contains("\"confirmation_token\""));

    let (status, model_calls, tool_calls, finished): (String, i32, i32, bool) = sqlx::query_as(
        "SELECT status, model_calls, tool_calls, finished_at IS NOT NULL FROM turns WHERE id = $1",
    )
    .bind(turn.turn_id)
    .fetch_one(harness.state.database())
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), model_calls, tool_calls, finished),
        ("completed", 2, 1, true)
    );
    assert_eq!(harness.audited(&turn).await.len(), 1);

    // The next turn's model sees the first turn, rebuilt from the event log.
    let second = harness.turn("And again?").await;
    assert_eq!(harness.run(&second).await, TurnStatus::Completed);
    let request = harness.model.requests().pop().unwrap();
    let said: Vec<&str> = request
        .messages
        .iter()
        .map(|message| message.content.as_str())
        .collect();
    assert!(said.contains(&"How many incidents do we have?"), "{said:?}");
    assert!(
        said.iter()
            .any(|text| text.starts_with("There are several incidents"))
    );
    assert_eq!(said.last(), Some(&"And again?"));
    assert_eq!(tool_results(&request)[0].0, "c1");
}

#[tokio::test]
async fn arguments_that_break_the_schema_are_handed_back_without_a_call() {
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![
            calls(vec![
                call(
                    "c1",
                    "internal-mcp__run_select",
                    json!({"query": "SELECT 1"}),
                ),
                StreamEvent::ToolCall(ToolCall {
                    id: "c2".into(),
                    name: "internal-mcp__run_select".into(),
                    arguments: "{\"sql\": \"SELECT 1".into(),
                }),
                call("c3", "internal-mcp__drop_everything", json!({})),
                call("c4", "internal-mcp__run_select", json!({"sql": 42})),
            ]),
            Reply::Events(answer("I could not query.")),
        ],
    )
    .await;
    let turn = harness.turn("Query something").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Completed);
    let finished = finished_calls(&harness.events_of(&turn).await);
    assert!(
        finished
            .iter()
            .all(|(_, status, _)| *status == CallStatus::Refused),
        "{finished:?}"
    );
    let results = tool_results(&harness.model.requests()[1]);
    let result = |id: &str| {
        results
            .iter()
            .find(|(call_id, _)| call_id == id)
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("no result for {id}"))
    };
    assert!(
        result("c1").contains("arguments.sql: required"),
        "{}",
        result("c1")
    );
    assert!(
        result("c1").contains("arguments.query: unknown argument"),
        "{}",
        result("c1")
    );
    assert!(result("c2").contains("invalid JSON"), "{}", result("c2"));
    assert!(result("c3").contains("no tool named"), "{}", result("c3"));
    assert!(
        result("c4").contains("expected string, got a number"),
        "{}",
        result("c4")
    );
    assert!(
        harness.audited(&turn).await.is_empty(),
        "nothing reached the server"
    );
}

/// A reply calling `run_select` of `SELECT 1`, without a call id.
fn select_one() -> Reply {
    calls(vec![call(
        "",
        "internal-mcp__run_select",
        json!({"sql": "SELECT 1 AS one"}),
    )])
}

#[tokio::test]
async fn the_third_identical_call_is_refused_and_the_model_told() {
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![
            select_one(),
            select_one(),
            select_one(),
            Reply::Events(answer("One.")),
        ],
    )
    .await;
    let turn = harness.turn("One?").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Completed);
    let events = harness.events_of(&turn).await;
    let statuses = call_statuses(&events);
    assert_eq!(
        statuses,
        [CallStatus::Ok, CallStatus::Ok, CallStatus::Refused]
    );
    let (_, _, refusal) = &finished_calls(&events)[2];
    assert!(refusal.contains("already ran 2 times"), "{refusal}");
    assert!(
        notices(&events)
            .iter()
            .any(|text| text.contains("repeated call"))
    );
    assert_eq!(harness.audited(&turn).await.len(), 2);
    // Calls without ids got ids of their own.
    let ids: Vec<String> = finished_calls(&events)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(
        ids.iter().all(|id| id.starts_with("call-")) && ids[0] != ids[1],
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_model_that_repeats_a_refused_call_has_its_turn_stopped() {
    // The script would go on repeating; the turn must end at the fourth call, not at the cap.
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        (0..8).map(|_| select_one()).collect(),
    )
    .await;
    let turn = harness.turn("One?").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    let statuses = call_statuses(&events);
    assert_eq!(
        statuses,
        [
            CallStatus::Ok,
            CallStatus::Ok,
            CallStatus::Refused,
            CallStatus::Refused
        ]
    );
    assert_eq!(harness.model.requests().len(), 4, "no model call after it");
    assert!(
        notices(&events)
            .iter()
            .any(|text| text.contains("so the turn was stopped")),
        "{:?}",
        notices(&events)
    );
    assert_eq!(harness.audited(&turn).await.len(), 2);
}

#[tokio::test]
async fn caps_end_the_turn_with_a_notice_naming_the_cap_and_the_counts() {
    let select = |n: u32| {
        calls(vec![call(
            &format!("c{n}"),
            "internal-mcp__run_select",
            json!({"sql": format!("SELECT {n} AS n")}),
        )])
    };
    let limits = TurnLimits {
        max_model_calls: 2,
        ..TurnLimits::DEFAULT
    };
    let harness = harness("marcus", limits, (0..5).map(select).collect()).await;
    let turn = harness.turn("Loop forever").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    let notice = notices(&events).join("\n");
    assert!(
        notice.contains("cap of 2 model calls: 2 model calls, 2 tool calls"),
        "{notice}"
    );
    assert_eq!(harness.model.requests().len(), 2);
    let Some(TurnEvent::TurnFinished {
        status,
        model_calls,
        tool_calls,
        ..
    }) = events.last()
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        (*status, *model_calls, *tool_calls),
        (TurnStatus::Stopped, 2, 2)
    );

    // The tool-call cap: the second call of a reply is not made.
    let limits = TurnLimits {
        max_tool_calls: 1,
        ..TurnLimits::DEFAULT
    };
    let harness = harness_with_two_calls(limits).await;
    let turn = harness.turn("Two at once").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    let statuses = call_statuses(&events);
    assert_eq!(statuses, [CallStatus::Ok, CallStatus::Refused]);
    assert!(notices(&events).join("\n").contains("cap of 1 tool calls"));
    assert_eq!(harness.audited(&turn).await.len(), 1);
}

async fn harness_with_two_calls(limits: TurnLimits) -> Harness {
    harness(
        "marcus",
        limits,
        vec![calls(vec![
            call(
                "a",
                "internal-mcp__run_select",
                json!({"sql": "SELECT 1 AS one"}),
            ),
            call(
                "b",
                "internal-mcp__run_select",
                json!({"sql": "SELECT 2 AS two"}),
            ),
        ])],
    )
    .await
}

#[tokio::test]
async fn stop_drops_a_slow_tool_call_and_the_server_cancels_it() {
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![calls(vec![call(
            "slow",
            "internal-mcp__run_select",
            json!({"sql": "SELECT pg_sleep(4) AS slept"}),
        )])],
    )
    .await;
    let turn = harness.turn("Sleep").await;
    let cancel = CancellationToken::new();
    let running = {
        let agent = harness.agent.clone();
        let events = harness.events.clone();
        let turn = turn.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { agent.run_turn(&turn, &events, cancel).await })
    };
    // Stop once the call is under way on the server.
    let started = Instant::now();
    loop {
        let events = harness.events_of(&turn).await;
        if kinds(&events).contains(&"tool_call_started") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    cancel.cancel();
    let status = running.await.unwrap().expect("the turn ends");
    eprintln!("Stop to a settled turn: {:?}", stopped_at.elapsed());
    assert_eq!(status, TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    let finished = finished_calls(&events);
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].1, CallStatus::TransportError);
    assert!(
        finished[0].2.contains("stopped the turn"),
        "{}",
        finished[0].2
    );
    assert!(matches!(
        events.last(),
        Some(TurnEvent::TurnFinished {
            status: TurnStatus::Stopped,
            ..
        })
    ));

    // internal-mcp dropped the handler: its audit row says cancelled, not a finished query.
    let waited = Instant::now();
    let audited = loop {
        let audited = harness.audited(&turn).await;
        if !audited.is_empty() || waited.elapsed() > Duration::from_secs(15) {
            break audited;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "internal-mcp recorded the cancellation {:?} after Stop",
        stopped_at.elapsed()
    );
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled"),
        "{audited:?}"
    );
}

/// A turn that proposes a note, as a responder, then `after`.
async fn annotation_harness(after: Vec<Reply>) -> (Harness, String) {
    let harness = harness("marcus", TurnLimits::DEFAULT, Vec::new()).await;
    let incident = harness.incident().await;
    let mut replies = VecDeque::from(vec![calls(vec![call(
        "note",
        "internal-mcp__annotate_incident",
        json!({"incident": incident, "note": "Rollback confirmed by the assistant's user"}),
    )])]);
    replies.extend(after);
    *harness.model.script.lock().unwrap() = replies;
    (harness, incident)
}

async fn pending_approval(harness: &Harness, turn: &TurnContext) -> (Uuid, String) {
    sqlx::query_as(
        "SELECT id, confirmation_token FROM approvals WHERE turn_id = $1 AND status = 'pending'",
    )
    .bind(turn.turn_id)
    .fetch_one(harness.state.database())
    .await
    .expect("a pending approval")
}

/// Nothing the page or the model got may contain `token`.
async fn assert_token_never_leaked(harness: &Harness, token: &str) {
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE conversation_id = $1")
            .bind(harness.conversation_id)
            .fetch_all(harness.state.database())
            .await
            .unwrap();
    assert!(!payloads.is_empty());
    assert!(
        payloads.iter().all(|payload| !payload.contains(token)),
        "the token is in an event"
    );
    let results: Vec<String> = sqlx::query_scalar("SELECT full_text FROM tool_results")
        .fetch_all(harness.state.database())
        .await
        .unwrap();
    assert!(
        results.iter().all(|text| !text.contains(token)),
        "the token is in a stored result"
    );
    for request in harness.model.requests() {
        let sent = format!("{request:?}");
        assert!(!sent.contains(token), "the token reached the model");
    }
}

#[tokio::test]
async fn an_approved_change_is_made_once_by_the_host_after_the_user_confirms() {
    let (harness, incident) =
        annotation_harness(vec![Reply::Events(answer("The note is on the timeline."))]).await;
    let notes_before = harness.notes().await;
    let turn = harness.turn(&format!("Add a note to {incident}")).await;
    assert_eq!(harness.run(&turn).await, TurnStatus::WaitingForApproval);

    let events = harness.events_of(&turn).await;
    let plan = events
        .iter()
        .find_map(|event| match event {
            TurnEvent::ApprovalRequested { plan, tool, .. } => Some((tool.clone(), plan.clone())),
            _ => None,
        })
        .expect("an approval was requested");
    assert_eq!(plan.0, "annotate_incident");
    assert_eq!(plan.1["note"], "Rollback confirmed by the assistant's user");
    let finished = finished_calls(&events);
    assert_eq!(finished[0].1, CallStatus::AwaitingApproval);
    assert_eq!(
        harness.model.requests().len(),
        1,
        "the turn ended at the plan"
    );
    let (status, finished_at): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status, finished_at FROM turns WHERE id = $1")
            .bind(turn.turn_id)
            .fetch_one(harness.state.database())
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), finished_at),
        ("waiting_for_approval", None)
    );
    assert_eq!(
        harness.notes().await,
        notes_before,
        "planning changes nothing"
    );

    let (approval_id, token) = pending_approval(&harness, &turn).await;
    assert!(token.starts_with("imc_"));
    let status = harness
        .agent
        .decide(
            &turn,
            approval_id,
            Decision::Confirm,
            &harness.events,
            CancellationToken::new(),
        )
        .await
        .expect("the decision");
    assert_eq!(status, TurnStatus::Completed);
    assert_eq!(
        harness.notes().await,
        notes_before + 1,
        "the note was added"
    );

    // The model was told the outcome, as a note from the host.
    let last = harness.model.requests().pop().unwrap();
    assert!(
        last.messages
            .iter()
            .any(|m| m.content.contains("The user confirmed the plan")),
        "{:?}",
        last.messages
    );

    // A second Confirm (a double click, a replayed POST) changes nothing.
    let again = harness
        .agent
        .decide(
            &turn,
            approval_id,
            Decision::Confirm,
            &harness.events,
            CancellationToken::new(),
        )
        .await
        .expect("the second decision");
    assert_eq!(again, TurnStatus::Completed);
    assert_eq!(harness.notes().await, notes_before + 1);
    let events = harness.events_of(&turn).await;
    assert!(
        notices(&events)
            .iter()
            .any(|text| text.contains("already confirmed")),
        "{:?}",
        notices(&events)
    );
    assert_token_never_leaked(&harness, &token).await;
}

#[tokio::test]
async fn a_rejected_change_is_not_made_and_the_model_is_told() {
    let (harness, incident) =
        annotation_harness(vec![Reply::Events(answer("Understood, no note."))]).await;
    let notes_before = harness.notes().await;
    let turn = harness.turn(&format!("Add a note to {incident}")).await;
    assert_eq!(harness.run(&turn).await, TurnStatus::WaitingForApproval);
    let (approval_id, token) = pending_approval(&harness, &turn).await;

    // Another user of the organisation cannot decide on it.
    let mut other = turn.clone();
    other.user = user(&harness.database.pool, "acme", "dana").await;
    let status = harness
        .agent
        .decide(
            &other,
            approval_id,
            Decision::Confirm,
            &harness.events,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, TurnStatus::WaitingForApproval);

    let status = harness
        .agent
        .decide(
            &turn,
            approval_id,
            Decision::Reject,
            &harness.events,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, TurnStatus::Completed);
    assert_eq!(harness.notes().await, notes_before);
    let stored: String = sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
        .bind(approval_id)
        .fetch_one(harness.state.database())
        .await
        .unwrap();
    assert_eq!(stored, "rejected");
    let last = harness.model.requests().pop().unwrap();
    assert!(
        last.messages
            .iter()
            .any(|m| m.content.contains("rejected the plan"))
    );
    let consumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_mcp_confirmations WHERE consumed_at IS NOT NULL",
    )
    .fetch_one(&harness.database.pool)
    .await
    .unwrap();
    assert_eq!(consumed, 0);
    assert_token_never_leaked(&harness, &token).await;
}

#[tokio::test]
async fn the_model_cannot_confirm_a_change_by_itself() {
    let harness = harness("marcus", TurnLimits::DEFAULT, Vec::new()).await;
    let incident = harness.incident().await;
    let arguments = json!({"incident": incident, "note": "Self-confirmed"});
    let with = |token: &str| {
        let mut arguments = arguments.clone();
        arguments["confirmation_token"] = json!(token);
        arguments
    };
    // Anything token-shaped the model was ever shown, replayed.
    let replay = {
        let arguments = arguments.clone();
        move |request: &Request| {
            let seen = format!("{request:?}");
            let mut found: Vec<String> = seen
                .match_indices("imc_")
                .map(|(at, _)| {
                    seen[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                        .collect()
                })
                .collect();
            found.push("imc_replayed".into());
            let mut events: Vec<StreamEvent> = found
                .iter()
                .enumerate()
                .map(|(n, token)| {
                    let mut arguments = arguments.clone();
                    arguments["confirmation_token"] = json!(token);
                    call(
                        &format!("replay{n}"),
                        "internal-mcp__annotate_incident",
                        arguments,
                    )
                })
                .collect();
            events.push(StreamEvent::Finished(FinishReason::ToolCalls));
            events
        }
    };
    let script = vec![
        // A plan, properly.
        calls(vec![call(
            "plan",
            "internal-mcp__annotate_incident",
            arguments.clone(),
        )]),
    ];
    *harness.model.script.lock().unwrap() = script.into();
    let notes_before = harness.notes().await;
    let first = harness.turn(&format!("Note on {incident}")).await;
    assert_eq!(harness.run(&first).await, TurnStatus::WaitingForApproval);
    let (_, token) = pending_approval(&harness, &first).await;

    // A new turn in which the model tries everything: guesses, replays, the plan again.
    *harness.model.script.lock().unwrap() = vec![
        calls(vec![
            call(
                "guess",
                "internal-mcp__annotate_incident",
                with("imc_guessed0123456789"),
            ),
            call("null", "internal-mcp__annotate_incident", with("")),
        ]),
        Reply::FromRequest(Box::new(replay)),
        calls(vec![call(
            "sql",
            "internal-mcp__run_select",
            json!({"sql": "SELECT * FROM internal_mcp_confirmations"}),
        )]),
        Reply::Events(answer("I could not confirm it myself.")),
    ]
    .into();
    // The person moves on without deciding (one turn at a time per conversation, so the first is
    // set aside as Stop would); the plan stays confirmable on the server, which is the point.
    sqlx::query("UPDATE turns SET status = 'stopped' WHERE id = $1")
        .bind(first.turn_id)
        .execute(harness.state.database())
        .await
        .expect("the first turn set aside");
    let second = harness.turn("Just confirm it yourself.").await;
    assert_eq!(harness.run(&second).await, TurnStatus::Completed);
    let events = harness.events_of(&second).await;
    let finished = finished_calls(&events);
    for (id, status, text) in &finished {
        if id == "sql" {
            assert_eq!(*status, CallStatus::ToolError, "{text}");
        } else {
            assert_eq!(*status, CallStatus::Refused, "{id}: {text}");
            assert!(text.contains("not an argument you may pass"), "{text}");
        }
    }
    assert!(finished.len() >= 4, "{finished:?}");
    assert_eq!(harness.notes().await, notes_before, "nothing changed");
    let consumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_mcp_confirmations WHERE consumed_at IS NOT NULL",
    )
    .fetch_one(&harness.database.pool)
    .await
    .unwrap();
    assert_eq!(consumed, 0);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM approvals WHERE status = 'pending'")
            .fetch_one(harness.state.database())
            .await
            .unwrap();
    assert_eq!(pending, 1, "only the proper plan waits");
    assert_token_never_leaked(&harness, &token).await;

    // A leak: the model somehow holds the real token (read here from the host's database) and
    // passes it, then asks for the plan again. The token is refused as any other; the new plan
    // waits for a person like the first, which stays pending and unconfirmed.
    let (approval_id, _) = pending_approval(&harness, &first).await;
    *harness.model.script.lock().unwrap() = vec![
        calls(vec![call(
            "leaked",
            "internal-mcp__annotate_incident",
            with(&token),
        )]),
        calls(vec![call(
            "again",
            "internal-mcp__annotate_incident",
            arguments.clone(),
        )]),
    ]
    .into();
    let third = harness.turn("You have the token now: confirm it.").await;
    assert_eq!(harness.run(&third).await, TurnStatus::WaitingForApproval);
    let finished = finished_calls(&harness.events_of(&third).await);
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[0].0, "leaked");
    assert_eq!(finished[0].1, CallStatus::Refused, "{}", finished[0].2);
    assert!(
        finished[0].2.contains("not an argument you may pass"),
        "{}",
        finished[0].2
    );
    assert_eq!(finished[1].0, "again");
    assert_eq!(
        finished[1].1,
        CallStatus::AwaitingApproval,
        "{}",
        finished[1].2
    );
    assert_eq!(harness.notes().await, notes_before, "nothing changed");
    let consumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_mcp_confirmations WHERE consumed_at IS NOT NULL",
    )
    .fetch_one(&harness.database.pool)
    .await
    .unwrap();
    assert_eq!(consumed, 0, "no confirmation was used");
    let first_status: String = sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
        .bind(approval_id)
        .fetch_one(harness.state.database())
        .await
        .unwrap();
    assert_eq!(first_status, "pending");
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT turn_id FROM approvals WHERE status = 'pending' ORDER BY created_at",
    )
    .fetch_all(harness.state.database())
    .await
    .unwrap();
    assert_eq!(
        waiting,
        [first.turn_id, third.turn_id],
        "each plan waits for a person"
    );
}

#[tokio::test]
async fn a_long_result_is_capped_and_the_model_can_page_through_it() {
    let limits = TurnLimits {
        max_result_chars: 1_000,
        ..TurnLimits::DEFAULT
    };
    let harness = harness(
        "marcus",
        limits,
        vec![
            calls(vec![call(
                "long",
                "internal-mcp__run_select",
                json!({"sql": "SELECT repeat('x', 5000) AS long_text"}),
            )]),
            calls(vec![call(
                "page",
                "host__read_result",
                json!({"call_id": "long", "offset": 1000}),
            )]),
            Reply::Events(answer("A long text of x.")),
        ],
    )
    .await;
    let turn = harness.turn("Long?").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Completed);
    let requests = harness.model.requests();
    let first = &tool_results(&requests[1])[0].1;
    assert!(
        first.contains("host__read_result with call_id \"long\" and offset 1000"),
        "{first}"
    );
    let page = &tool_results(&requests[2])[1].1;
    assert!(page.contains("Characters 1000 to 2000 of"), "{page}");
    let offers_paging = |request: &Request| {
        request
            .tools
            .iter()
            .any(|tool| tool.name == "host__read_result")
    };
    assert!(
        !offers_paging(&requests[0]),
        "nothing to page before the cut"
    );
    assert!(
        offers_paging(&requests[1]),
        "paging is offered once a result was cut"
    );
    let events = harness.events_of(&turn).await;
    let Some(TurnEvent::ToolCallFinished { outcome, .. }) = events.iter().find(
        |event| matches!(event, TurnEvent::ToolCallFinished { call_id, .. } if call_id == "long"),
    ) else {
        panic!("{events:?}");
    };
    assert!(outcome.truncated);
    assert!(outcome.bytes > 5_000, "{}", outcome.bytes);
    assert_eq!(outcome.text.chars().count(), 1_000);
}

/// A reply that streams its events slowly, as a real model does.
fn slowly(events: Vec<StreamEvent>, every: Duration) -> Reply {
    let events = Mutex::new(Some(events));
    Reply::Delayed(
        Box::new(move |_| events.lock().unwrap().take().unwrap_or_default()),
        every,
    )
}

#[tokio::test]
async fn stop_during_the_model_stream_ends_the_turn_with_the_text_so_far() {
    let words: Vec<StreamEvent> = (0..200)
        .map(|n| StreamEvent::TextDelta(format!("word{n} ")))
        .chain([StreamEvent::Finished(FinishReason::Stop)])
        .collect();
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![slowly(words, Duration::from_millis(20))],
    )
    .await;
    let turn = harness.turn("Talk slowly").await;
    let cancel = CancellationToken::new();
    let running = {
        let agent = harness.agent.clone();
        let events = harness.events.clone();
        let turn = turn.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { agent.run_turn(&turn, &events, cancel).await })
    };
    // Text is stored while it streams, not only at the end.
    let waited = Instant::now();
    while !kinds(&harness.events_of(&turn).await).contains(&"text") {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "no text arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    assert_eq!(running.await.unwrap().unwrap(), TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    let text: String = events
        .iter()
        .filter_map(|event| match event {
            TurnEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let stored_words = text.split_whitespace().count();
    eprintln!(
        "stopped after {stored_words} of 200 words, in {} text events",
        kinds(&events)
            .iter()
            .filter(|kind| **kind == "text")
            .count()
    );
    assert!(stored_words < 200, "the stream was not dropped");
    assert!(notices(&events).contains(&"Stopped by the user.".to_owned()));
    assert!(matches!(
        events.last(),
        Some(TurnEvent::TurnFinished {
            status: TurnStatus::Stopped,
            ..
        })
    ));
}

#[tokio::test]
async fn the_time_limit_cancels_a_slow_tool_and_says_so() {
    let limits = TurnLimits {
        max_wall_time: Duration::from_secs(1),
        ..TurnLimits::DEFAULT
    };
    let harness = harness(
        "marcus",
        limits,
        vec![calls(vec![call(
            "slow",
            "internal-mcp__run_select",
            json!({"sql": "SELECT pg_sleep(3) AS slept"}),
        )])],
    )
    .await;
    let turn = harness.turn("Sleep").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Stopped);
    let events = harness.events_of(&turn).await;
    assert!(
        notices(&events)
            .join("\n")
            .contains("the time limit of 1 s"),
        "{:?}",
        notices(&events)
    );
    assert_eq!(finished_calls(&events)[0].1, CallStatus::TransportError);
}

#[tokio::test]
async fn an_expired_plan_changes_nothing_and_the_model_is_told() {
    let (harness, incident) =
        annotation_harness(vec![Reply::Events(answer("The plan expired."))]).await;
    let notes_before = harness.notes().await;
    let turn = harness.turn(&format!("Add a note to {incident}")).await;
    assert_eq!(harness.run(&turn).await, TurnStatus::WaitingForApproval);
    let (approval_id, _) = pending_approval(&harness, &turn).await;
    sqlx::query("UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(approval_id)
        .execute(harness.state.database())
        .await
        .unwrap();
    let status = harness
        .agent
        .decide(
            &turn,
            approval_id,
            Decision::Confirm,
            &harness.events,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, TurnStatus::Completed);
    assert_eq!(harness.notes().await, notes_before);
    let events = harness.events_of(&turn).await;
    assert!(events.iter().any(|event| matches!(
        event,
        TurnEvent::ApprovalDecided { decision, decided_by: None, .. } if decision == "expired"
    )));
    let last = harness.model.requests().pop().unwrap();
    assert!(
        last.messages
            .iter()
            .any(|m| m.content.contains("expired before the user decided"))
    );
}

#[tokio::test]
async fn a_metric_series_result_is_drawn_as_a_chart() {
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![
            calls(vec![call(
                "series",
                "internal-mcp__run_select",
                json!({"sql": "SELECT ts, value FROM metric_samples WHERE series_id = (SELECT min(series_id) FROM metric_samples) ORDER BY ts DESC LIMIT 30"}),
            )]),
            Reply::Events(answer("Here is the series.")),
        ],
    )
    .await;
    let turn = harness.turn("Show me a metric").await;
    assert_eq!(harness.run(&turn).await, TurnStatus::Completed);
    let events = harness.events_of(&turn).await;
    let chart = events
        .iter()
        .find_map(|event| match event {
            TurnEvent::ToolCallFinished { outcome, .. } => outcome.chart.clone(),
            _ => None,
        })
        .expect("a chart");
    assert_eq!(chart.series.len(), 1);
    assert_eq!(chart.series[0].label, "value");
    assert_eq!(chart.series[0].points.len(), 30);
    assert!(
        chart.series[0]
            .points
            .windows(2)
            .all(|pair| pair[0].at < pair[1].at)
    );
}

/// Estimated tokens of what a request spends on instructions and tool definitions.
fn overhead_tokens(request: &Request) -> usize {
    let system = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System)
        .map(|message| message.content.len())
        .sum::<usize>();
    (system + serde_json::to_string(&request.tools).unwrap().len()) / 4
}

#[tokio::test]
async fn with_skills_the_model_gets_a_groups_tools_only_after_activating_it() {
    let harness = harness(
        "marcus",
        TurnLimits::DEFAULT,
        vec![
            // Without skills, for comparison.
            Reply::Events(answer("Plain.")),
            // With skills: a tool of an inactive group is refused; activating the group offers it.
            calls(vec![
                call(
                    "early",
                    "internal-mcp__run_select",
                    json!({"sql": "SELECT 1 AS one"}),
                ),
                call("on", "host__activate", json!({"group": "sql"})),
            ]),
            calls(vec![call(
                "select",
                "internal-mcp__run_select",
                json!({"sql": "SELECT 1 AS one"}),
            )]),
            Reply::Events(answer("One.")),
            // The next turn of the conversation keeps the group active.
            Reply::Events(answer("Still one.")),
        ],
    )
    .await;
    let plain = harness.turn("Plain?").await;
    assert_eq!(harness.run(&plain).await, TurnStatus::Completed);
    let with_skills = harness.agent.clone().with_skills(true);
    let turn = harness.turn("One?").await;
    let status = with_skills
        .run_turn(&turn, &harness.events, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(status, TurnStatus::Completed);

    let requests = harness.model.requests();
    let names = |request: &Request| -> Vec<String> {
        request.tools.iter().map(|tool| tool.name.clone()).collect()
    };
    assert!(names(&requests[0]).contains(&"internal-mcp__run_select".to_owned()));
    let first = names(&requests[1]);
    assert_eq!(first, ["host__activate"], "only the index at first");
    let system = &requests[1].messages[0].content;
    assert!(system.contains("Capability groups"), "{system}");
    assert!(system.contains("- sql (4 tools, not active)"), "{system}");
    assert!(
        system.contains("- incidents (8 tools, not active)"),
        "{system}"
    );
    let results = tool_results(&requests[2]);
    assert!(
        results[0].1.contains("which is not active"),
        "{}",
        results[0].1
    );
    assert!(
        results[1].1.contains("internal-mcp__run_select"),
        "{}",
        results[1].1
    );
    // With the group come internal-mcp's instructions for it, read only once it is active.
    assert!(
        results[1].1.contains("How to use them:")
            && results[1].1.contains("filter it by series_id")
            && results[1].1.contains("explain_select before"),
        "{}",
        results[1].1
    );
    assert!(!system.contains("filter it by series_id"), "{system}");
    let second = names(&requests[2]);
    assert!(
        second.contains(&"internal-mcp__run_select".to_owned()),
        "{second:?}"
    );
    assert!(
        !second.contains(&"internal-mcp__annotate_incident".to_owned()),
        "{second:?}"
    );
    let activate = requests[2]
        .tools
        .iter()
        .find(|tool| tool.name == "host__activate")
        .expect("groups are left to activate");
    assert_eq!(
        activate.parameters["properties"]["group"]["enum"],
        json!(["incidents", "metrics"]),
        "only the groups still to activate"
    );
    assert!(
        requests[2].messages[0]
            .content
            .contains("- sql (4 tools, active)")
    );
    let finished = finished_calls(&harness.events_of(&turn).await);
    assert_eq!(
        finished.last().map(|(_, status, _)| *status),
        Some(CallStatus::Ok)
    );

    let next = harness.turn("And now?").await;
    with_skills
        .run_turn(&next, &harness.events, CancellationToken::new())
        .await
        .unwrap();
    let last = harness.model.requests().pop().unwrap();
    assert!(names(&last).contains(&"internal-mcp__run_select".to_owned()));

    let without = overhead_tokens(&requests[0]);
    let before_activation = overhead_tokens(&requests[1]);
    let after_activation = overhead_tokens(&requests[2]);
    eprintln!(
        "instructions and tool definitions per model call: {without} tokens without skills; with skills \
         {before_activation} before activating a group and {after_activation} with sql active \
         (saved {} and {})",
        without - before_activation,
        without - after_activation
    );
    assert!(before_activation < without && after_activation < without);
}
