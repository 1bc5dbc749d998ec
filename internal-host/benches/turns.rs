//! Benchmark: what the assistant's loop itself costs per turn, apart from the model and the tools.
//! A turn asks one question; the model (in process, answering at once, so its time is nil) calls
//! `run_select` on the real internal-mcp over HTTP, then answers. Measured per turn: wall time,
//! the time the tool call took as the host saw it, the host's overhead (the rest: connecting and
//! listing tools, the credential, the event log, the history), and the time to the first streamed
//! byte: a page open on the conversation reads the real `GET /conversations/{id}/events` of the
//! host's web app over HTTP (with a session of the user as the sign-in callback creates it), and
//! the clock runs from the turn's start to its first event byte. It also prints the
//! tokens the skills index keeps out of the first model call.
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
#[allow(dead_code)] // the web tests' helpers; the benchmark serves the product and the host with them
#[path = "../tests/it/web_support.rs"]
mod web_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use internal_host::AppState;
use internal_host::agent::{Agent, TurnLimits};
use internal_host::events::{TurnEvent, TurnStatus};
use internal_host::llm::{
    EventStream, FinishReason, LlmSettings, ModelInfo, Provider, Request, Role, StreamEvent,
    ToolCall, ToolMode, Usage,
};
use internal_host::session::SESSION_COOKIE;
use internal_host::sign_in::Identity;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use support::{new_conversation, new_turn, seeded_database, spawn_internal_mcp, user};

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
    /// From the turn's start to the first byte of an event on the page's stream.
    first_byte: Duration,
    tools_ms: u64,
    status: TurnStatus,
    tool_calls: usize,
    first_tool: Option<String>,
}

struct Bench {
    state: AppState,
    user: internal_host::credentials::ActingUser,
    /// The host's web app, served on its own port.
    base: String,
    /// The cookie of a session of `user`.
    session_cookie: String,
    http: reqwest::Client,
}

impl Bench {
    async fn turn(&self, agent: &Agent, question: &str) -> anyhow::Result<Measured> {
        let conversation_id = new_conversation(self.state.database(), &self.user, "bench").await;
        let turn = new_turn(self.state.database(), conversation_id, &self.user, question).await;

        // A page open on the conversation: its event stream is connected before the turn starts.
        let mut stream = self
            .http
            .get(format!(
                "{}/conversations/{conversation_id}/events",
                self.base
            ))
            .header(reqwest::header::COOKIE, &self.session_cookie)
            .send()
            .await?
            .error_for_status()?;
        let started = Instant::now();
        let running = agent.run_turn(&turn, self.state.events(), CancellationToken::new());
        tokio::pin!(running);
        let mut first_byte = None;
        let status = loop {
            tokio::select! {
                status = &mut running => break status?,
                chunk = stream.chunk(), if first_byte.is_none() => {
                    first_byte = first_event_byte(chunk?, started)?;
                }
            }
        };
        let wall = started.elapsed();
        while first_byte.is_none() {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await??;
            first_byte = first_event_byte(chunk, started)?;
        }
        let events = self.state.events().read_turn(turn.turn_id).await?;
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
        Ok(Measured {
            wall,
            first_byte: first_byte.unwrap_or(wall),
            tools_ms,
            status,
            tool_calls,
            first_tool,
        })
    }
}

/// The time since `started` if `chunk` begins an event (not a keep-alive comment); an error if the
/// stream ended.
fn first_event_byte(
    chunk: Option<axum::body::Bytes>,
    started: Instant,
) -> anyhow::Result<Option<Duration>> {
    match chunk {
        None => anyhow::bail!("the event stream ended before the first event"),
        Some(bytes) if bytes.is_empty() || bytes.starts_with(b":") => Ok(None),
        Some(_) => Ok(Some(started.elapsed())),
    }
}

/// A session of `handle` of `slug`, as the sign-in callback creates it; returns its cookie.
async fn session_cookie_of(
    state: &AppState,
    product: &sqlx::PgPool,
    slug: &str,
    handle: &str,
) -> anyhow::Result<String> {
    let (user_id, user_name, email, role, organization_id, organization_name): (
        Uuid,
        String,
        String,
        String,
        Uuid,
        String,
    ) = sqlx::query_as(
        "SELECT u.id, u.name, u.email, u.role::text, o.id, o.name FROM users u
           JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email LIKE $2 || '@%'",
    )
    .bind(slug)
    .bind(handle)
    .fetch_one(product)
    .await?;
    let identity = Identity {
        user_id,
        user_name,
        email,
        role,
        organization_id,
        organization_name,
    };
    let secret = internal_host::session::create(
        state.database(),
        &identity,
        None,
        Duration::from_secs(3600),
    )
    .await?;
    Ok(format!("{SESSION_COOKIE}={secret}"))
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
    let (state, base, _issuer, _servers) =
        web_support::serve_product_and_host(&database, &url, |state| state).await;
    let session_cookie = session_cookie_of(&state, &database.pool, "acme", "dana").await?;
    let bench = Bench {
        user: user(&database.pool, "acme", "dana").await,
        state,
        base,
        session_cookie,
        http: reqwest::Client::new(),
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
        firsts.push(measured.first_byte.as_secs_f64() * 1000.0);
    }
    println!(
        "turn with one run_select over HTTP, the model answering at once, {turns} turns:\n  \
         wall          p50 {:7.1} ms  p99 {:7.1} ms\n  \
         tool call     p50 {:7.1} ms  p99 {:7.1} ms  (as the host timed it, whole milliseconds)\n  \
         host overhead p50 {:7.1} ms  p99 {:7.1} ms  (wall minus the tool call: connect, list tools, credential, events, history)\n  \
         first byte    p50 {:7.1} ms  p99 {:7.1} ms  (the turn's start to its first event byte on a page's GET .../events)",
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
