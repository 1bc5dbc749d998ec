//! Benchmark: what the assistant's loop itself costs per turn, apart from the model and the tools.
//! A turn asks one question; the model (in process, answering at once, so its time is nil) calls
//! `run_select` on the real internal-mcp over HTTP, then answers. Measured per turn: wall time,
//! the time the tool call took as the host saw it, the host's overhead (the rest: connecting and
//! listing tools, the credential, the event log, the history), and the time to the first event a
//! page streams. It also prints the tokens the skills index keeps out of the first model call.
//!
//! With `BENCH_LLM_URL` naming an OpenAI-compatible server (the local model:
//! `ops/local-model start --port 8093 --log /tmp/llm.log --pid /tmp/llm.pid`, then
//! `BENCH_LLM_URL=http://127.0.0.1:8093/v1`; `BENCH_LLM_MODEL` defaults to `gemma-3-270m`), it
//! also asks that model 10 seeded questions the way `ops/run` configures a local model (JSON-schema
//! tool mode, skills off) and prints seconds per turn and how many it answered with the right
//! tool. Asserts nothing about time.
//!
//! `cargo bench -p internal-host --bench turns`. `BENCH_TURNS` (default 50) tunes it.

#[allow(dead_code)] // the tests' helpers; the benchmark uses a few
#[path = "../tests/it/support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use internal_host::AppState;
use internal_host::agent::{Agent, TurnContext, TurnLimits};
use internal_host::events::{EventLog, TurnEvent, TurnStatus};
use internal_host::llm::{
    EventStream, FinishReason, LlmSettings, ModelInfo, Provider, Request, Role, StreamEvent,
    ToolCall, ToolMode, Usage,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use support::{host_config, seeded_database, spawn_internal_mcp, user};

/// A model that answers at once: a `run_select` first, then a sentence once it read the result.
/// It keeps the tool definitions of the first request it was sent, for the skills figure.
#[derive(Debug)]
struct InstantModel {
    info: ModelInfo,
    first_tools_chars: Mutex<Option<usize>>,
}

impl InstantModel {
    fn new() -> Self {
        Self {
            info: ModelInfo {
                provider: "bench".into(),
                name: "instant".into(),
                context_window: 32_000,
                local: false,
            },
            first_tools_chars: Mutex::new(None),
        }
    }
}

impl Provider for InstantModel {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn stream(&self, request: Request) -> EventStream {
        let tools_chars: usize = request
            .tools
            .iter()
            .map(|tool| {
                tool.name.len() + tool.description.len() + tool.parameters.to_string().len()
            })
            .sum();
        self.first_tools_chars
            .lock()
            .unwrap()
            .get_or_insert(tools_chars);
        let answered = request
            .messages
            .last()
            .is_some_and(|message| message.role == Role::Tool);
        let mut events = if answered {
            vec![StreamEvent::TextDelta(
                "Here are the services and their tiers.".into(),
            )]
        } else {
            let name = request
                .tools
                .iter()
                .map(|tool| tool.name.clone())
                .find(|name| name.ends_with("run_select"))
                .unwrap_or_else(|| "host__activate".into());
            let arguments = if name == "host__activate" {
                json!({"group": "sql"})
            } else {
                json!({"sql": "SELECT name, tier FROM services ORDER BY name"})
            };
            vec![StreamEvent::ToolCall(ToolCall {
                id: format!("call-{}", Uuid::new_v4().simple()),
                name,
                arguments: arguments.to_string(),
            })]
        };
        events.push(StreamEvent::Usage(Usage {
            input_tokens: 500,
            output_tokens: 20,
        }));
        events.push(StreamEvent::Finished(if answered {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        }));
        futures_util::stream::iter(events.into_iter().map(Ok)).boxed()
    }
}

/// One measured turn.
struct Measured {
    wall: Duration,
    first_event: Duration,
    tools_ms: u64,
    status: TurnStatus,
    tool_calls: usize,
    first_tool: Option<String>,
}

struct Bench {
    state: AppState,
    events: EventLog,
    user: internal_host::credentials::ActingUser,
}

impl Bench {
    async fn turn(&self, agent: &Agent, question: &str) -> anyhow::Result<Measured> {
        let conversation_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO conversations (id, organization_id, user_id, title) VALUES ($1, $2, $3, 'bench')",
        )
        .bind(conversation_id)
        .bind(self.user.organization_id)
        .bind(self.user.user_id)
        .execute(self.state.database())
        .await?;
        let turn = TurnContext {
            turn_id: Uuid::new_v4(),
            conversation_id,
            correlation_id: Uuid::new_v4(),
            user: self.user.clone(),
            question: question.to_owned(),
        };
        sqlx::query(
            "INSERT INTO turns (id, conversation_id, correlation_id, question, status) VALUES ($1, $2, $3, $4, 'running')",
        )
        .bind(turn.turn_id)
        .bind(conversation_id)
        .bind(turn.correlation_id)
        .bind(question)
        .execute(self.state.database())
        .await?;

        // A page's stream wakes on the log's signal; the first one is what it would send first.
        let mut signals = self.events.signals();
        let started = Instant::now();
        let running = agent.run_turn(&turn, &self.events, CancellationToken::new());
        tokio::pin!(running);
        let mut first_event = None;
        let status = loop {
            tokio::select! {
                status = &mut running => break status?,
                () = self.events.wait_for_more(conversation_id, &mut signals), if first_event.is_none() => {
                    if !self.events.read_after(conversation_id, 0, 1).await?.is_empty() {
                        first_event = Some(started.elapsed());
                    }
                }
            }
        };
        let wall = started.elapsed();
        let events = self.events.read_turn(turn.turn_id).await?;
        let mut tools_ms = 0;
        let mut tool_calls = 0;
        let mut first_tool = None;
        for stored in &events {
            match &stored.event {
                TurnEvent::ToolCallStarted { tool, .. } if !tool.starts_with("host__") => {
                    first_tool.get_or_insert_with(|| tool.clone());
                }
                TurnEvent::ToolCallFinished { outcome, .. } => {
                    tools_ms += outcome.duration_ms;
                    tool_calls += 1;
                }
                _ => {}
            }
        }
        let first_event = first_event.unwrap_or(wall);
        Ok(Measured {
            wall,
            first_event,
            tools_ms,
            status,
            tool_calls,
            first_tool,
        })
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

/// The local model's questions: what a user asks, and the tools that answer it rightly.
const QUESTIONS: [(&str, &[&str]); 10] = [
    (
        "Which tables can I query?",
        &["list_tables", "describe_table"],
    ),
    (
        "Describe the deployments table.",
        &["describe_table", "list_tables"],
    ),
    (
        "How many deployments failed in the last 7 days?",
        &["run_select"],
    ),
    ("List our services and their tiers.", &["run_select"]),
    (
        "Were there anomalies in checkout-api's metrics today?",
        &["detect_anomalies"],
    ),
    ("Is checkout-api burning its error budget?", &["slo_burn"]),
    (
        "Which alert rules are the noisiest?",
        &["noisy_alert_rules"],
    ),
    (
        "Which deployment caused the latest incident?",
        &[
            "correlate_incident",
            "list_incidents_opened_since",
            "run_select",
        ],
    ),
    (
        "Show me the incidents opened in the last day.",
        &["list_incidents_opened_since", "run_select"],
    ),
    (
        "Acknowledge all firing alerts of checkout-api.",
        &["acknowledge_service_alerts"],
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(50);
    let database = seeded_database().await;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let state = AppState::connect(host_config(&database, &url)).await?;
    let bench = Bench {
        events: EventLog::new(state.database().clone()),
        user: user(&database.pool, "acme", "dana").await,
        state,
    };
    let limits = TurnLimits::default();
    limits.validate()?;
    let agent = |provider: Arc<dyn Provider>, skills: bool| {
        Agent::new(
            provider,
            bench.state.internal_mcp().clone(),
            bench.state.database().clone(),
            limits,
        )
        .with_skills(skills)
    };

    // Host overhead: the model costs nothing, so the turn is the host plus the tool call.
    let model = Arc::new(InstantModel::new());
    let instant = agent(model.clone(), false);
    bench.turn(&instant, "warm-up").await?;
    let (mut walls, mut overheads, mut firsts, mut tools) = (vec![], vec![], vec![], vec![]);
    for _ in 0..turns {
        let measured = bench.turn(&instant, "Which services do we have?").await?;
        anyhow::ensure!(
            measured.status == TurnStatus::Completed && measured.tool_calls == 1,
            "a benchmark turn ended {:?} with {} tool calls",
            measured.status,
            measured.tool_calls
        );
        let wall_ms = measured.wall.as_secs_f64() * 1000.0;
        walls.push(wall_ms);
        tools.push(measured.tools_ms as f64);
        overheads.push(wall_ms - measured.tools_ms as f64);
        firsts.push(measured.first_event.as_secs_f64() * 1000.0);
    }
    println!(
        "turn with one run_select over HTTP, the model answering at once, {turns} turns:\n  \
         wall          p50 {:7.1} ms  p99 {:7.1} ms\n  \
         tool call     p50 {:7.1} ms  p99 {:7.1} ms  (as the host timed it, whole milliseconds)\n  \
         host overhead p50 {:7.1} ms  p99 {:7.1} ms  (wall minus the tool call: connect, list tools, credential, events, history)\n  \
         first event   p50 {:7.1} ms  p99 {:7.1} ms  (what a page's stream sends first)",
        percentile(&mut walls, 0.5),
        percentile(&mut walls, 0.99),
        percentile(&mut tools, 0.5),
        percentile(&mut tools, 0.99),
        percentile(&mut overheads, 0.5),
        percentile(&mut overheads, 0.99),
        percentile(&mut firsts, 0.5),
        percentile(&mut firsts, 0.99),
    );

    // Skills: the tool definitions of the first model call, with and without the index.
    let indexed = Arc::new(InstantModel::new());
    bench
        .turn(&agent(indexed.clone(), true), "Which services do we have?")
        .await?;
    let all = model.first_tools_chars.lock().unwrap().unwrap_or_default();
    let index = indexed
        .first_tools_chars
        .lock()
        .unwrap()
        .unwrap_or_default();
    println!(
        "skills: the first model call carries {} characters of tool definitions with the index against {} without (about {} tokens saved per call, at 4 characters a token)",
        index,
        all,
        (all.saturating_sub(index)) / 4
    );

    let Ok(base_url) = std::env::var("BENCH_LLM_URL") else {
        println!("BENCH_LLM_URL is not set: the local model's questions are skipped");
        return Ok(());
    };
    let name = std::env::var("BENCH_LLM_MODEL").unwrap_or_else(|_| "gemma-3-270m".into());
    let mut settings = LlmSettings::openai_compatible(base_url, &name);
    settings.tool_mode = ToolMode::JsonSchema;
    settings.local = true;
    let local = agent(settings.build()?, false);
    let (mut seconds, mut right) = (vec![], 0);
    for (question, expected) in QUESTIONS {
        let measured = bench.turn(&local, question).await?;
        let tool = measured.first_tool.as_deref().unwrap_or("-");
        let bare = tool.rsplit("__").next().unwrap_or(tool);
        let hit = expected.contains(&bare);
        right += usize::from(hit);
        seconds.push(measured.wall.as_secs_f64());
        println!(
            "  {:5.1} s  {:>5}  {question:?} -> {tool} ({:?}, {} tool calls)",
            measured.wall.as_secs_f64(),
            if hit { "right" } else { "wrong" },
            measured.status,
            measured.tool_calls
        );
    }
    println!(
        "{name}: {right} of {} questions answered with the right tool first; seconds per turn p50 {:.1}, p99 {:.1}",
        QUESTIONS.len(),
        percentile(&mut seconds, 0.5),
        percentile(&mut seconds, 0.99)
    );
    Ok(())
}
