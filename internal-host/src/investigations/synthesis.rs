//! The model's layer of an investigation, when a language model is configured: after the playbook,
//! the model reads the recorded steps (each with its id), may ask a few more read-only questions
//! through the same internal-mcp session (each one a recorded step too), and answers with claims
//! as JSON. Code keeps only the claims that cite recorded steps of this attempt (see
//! [`ReportBuilder`]); the playbook's suspected cause and its confidence stay as computed.
//!
//! It runs within a per-run budget (model calls, tool calls, tokens, time) and the organisation's
//! daily model budget (calls, tokens and time, counted in `investigation_budgets`). Whatever goes wrong
//! (the model is down, slow, over budget, or writes something unreadable), the playbook's report
//! stands and says why the model added nothing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::playbook::{Findings, Recorder, RunError};
use super::report::{Claim, Report, ReportBuilder};
use super::store;
use crate::llm::{LlmError, Message, Provider, Request, StreamEvent, ToolCall, ToolSpec};
use crate::mcp::McpSession;

/// At most this many claims per section are taken from the model.
const MAX_CLAIMS_PER_SECTION: usize = 6;
const MAX_CLAIM_CHARS: usize = 400;
/// A step's result as the model reads it, and a tool result handed back to it.
const MAX_STEP_CHARS: usize = 1_500;
const MAX_TOOL_RESULT_CHARS: usize = 3_000;
/// Tools the model is not offered: discovery is the worker's, and no tool may change anything.
const WITHHELD_TOOLS: [&str; 1] = ["list_incidents_opened_since"];

/// What the model may spend, per run and per organisation per UTC day.
#[derive(Debug, Clone)]
pub struct SynthesisConfig {
    pub provider: Arc<dyn Provider>,
    pub max_model_calls: u32,
    pub max_tool_calls: u32,
    pub max_output_tokens: u32,
    pub max_tokens_per_run: u64,
    pub time_limit: Duration,
    pub daily_model_calls_per_organization: u32,
    pub daily_tokens_per_organization: u64,
    /// Time spent waiting on the model, per organisation per UTC day.
    pub daily_model_time_per_organization: Duration,
}

impl SynthesisConfig {
    /// The defaults, for `provider`.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            max_model_calls: 4,
            max_tool_calls: 3,
            max_output_tokens: 1_500,
            max_tokens_per_run: 60_000,
            time_limit: Duration::from_secs(120),
            daily_model_calls_per_organization: 400,
            daily_tokens_per_organization: 4_000_000,
            daily_model_time_per_organization: Duration::from_secs(2 * 3600),
        }
    }
}

/// What the model wrote, before the citation check.
#[derive(Debug, Default, Deserialize)]
struct Draft {
    #[serde(default)]
    what_is_going_on: Vec<DraftClaim>,
    #[serde(default)]
    evidence: Vec<DraftClaim>,
    #[serde(default)]
    ruled_out: Vec<DraftClaim>,
    #[serde(default)]
    next_steps: Vec<DraftClaim>,
}

#[derive(Debug, Deserialize)]
struct DraftClaim {
    text: String,
    #[serde(default)]
    cites: Vec<Value>,
}

/// What one synthesis spent.
#[derive(Debug, Default)]
struct Spent {
    model_calls: u32,
    tool_calls: u32,
    tokens: u64,
}

/// Why the model's part ended without a draft.
enum Stop {
    LeaseLost,
    /// The model server could not be reached or failed: worth another attempt later.
    ModelDown(String),
    GaveUp(String),
}

/// The report with the model's claims merged in, or the playbook's report with the reason the
/// model added nothing. A lost lease ends the attempt; so does a model server that is down,
/// failing or stalled (no byte for its idle timeout) while `last_attempt` is false: the run is
/// retried later, with backoff. On the last attempt the playbook's report stands. A model that
/// answers but needs more than the time limit is not retried (it would only be slow again): the
/// playbook's report stands at once.
pub(crate) async fn synthesize(
    config: &SynthesisConfig,
    recorder: &Recorder<'_>,
    session: &McpSession,
    findings: &Findings,
    mut report: Report,
    last_attempt: bool,
) -> Result<Report, RunError> {
    let model = config.provider.model().name.clone();
    let mut spent = Spent::default();
    let mut known_steps = findings.step_ids.clone();
    let outcome = tokio::time::timeout(
        config.time_limit,
        converse(
            config,
            recorder,
            session,
            &report,
            &mut spent,
            &mut known_steps,
        ),
    )
    .await;
    let draft = match outcome {
        Ok(Ok(draft)) => draft,
        Ok(Err(Stop::LeaseLost)) => return Err(RunError::LeaseLost),
        Ok(Err(Stop::ModelDown(reason))) if !last_attempt => {
            return Err(RunError::Retryable(format!(
                "the model {model} is unavailable: {reason}"
            )));
        }
        Ok(Err(Stop::GaveUp(reason) | Stop::ModelDown(reason))) => {
            report.synthesis = Some(format!("{model} added nothing: {reason}"));
            return Ok(report);
        }
        Err(_) => {
            report.synthesis = Some(format!(
                "{model} added nothing: it took longer than {} s",
                config.time_limit.as_secs()
            ));
            return Ok(report);
        }
    };
    let mut builder = ReportBuilder::new(known_steps);
    let mut take = |claims: Vec<DraftClaim>| -> Vec<Claim> {
        claims
            .into_iter()
            .take(MAX_CLAIMS_PER_SECTION)
            .filter_map(|claim| {
                let text: String = claim.text.trim().chars().take(MAX_CLAIM_CHARS).collect();
                if text.is_empty() {
                    return None;
                }
                builder.claim(text, &citations(&claim.cites))
            })
            .collect()
    };
    let what = take(draft.what_is_going_on);
    let evidence = take(draft.evidence);
    let ruled_out = take(draft.ruled_out);
    let next_steps = take(draft.next_steps);
    let kept = what.len() + evidence.len() + ruled_out.len() + next_steps.len();
    let dropped = builder.dropped();
    report.dropped_claims += dropped;
    let spending = format!(
        "{} model call(s), {} tool call(s), {} tokens",
        spent.model_calls, spent.tool_calls, spent.tokens
    );
    if kept == 0 {
        report.synthesis = Some(format!(
            "{model} added nothing: none of its {dropped} claim(s) cited a recorded step ({spending})"
        ));
        return Ok(report);
    }
    if !what.is_empty() {
        report.what_is_going_on = what;
    }
    for (list, added) in [
        (&mut report.evidence, evidence),
        (&mut report.ruled_out, ruled_out),
        (&mut report.next_steps, next_steps),
    ] {
        for claim in added {
            if !list.iter().any(|existing| existing.text == claim.text) {
                list.push(claim);
            }
        }
    }
    report.generated_by = format!("playbook + {model}");
    report.synthesis = Some(format!(
        "{model} wrote {kept} cited claim(s), {dropped} dropped for citing no recorded step ({spending})"
    ));
    Ok(report)
}

/// The conversation with the model: tool rounds within budget, then its JSON answer.
async fn converse(
    config: &SynthesisConfig,
    recorder: &Recorder<'_>,
    session: &McpSession,
    report: &Report,
    spent: &mut Spent,
    known_steps: &mut Vec<i64>,
) -> Result<Draft, Stop> {
    let steps = store::steps_of_attempt(recorder.pool, recorder.investigation)
        .await
        .map_err(|error| Stop::GaveUp(format!("the recorded steps could not be read: {error}")))?;
    let tools: Vec<ToolSpec> = session
        .tools()
        .await
        .map_err(|error| {
            Stop::GaveUp(format!("internal-mcp's tools could not be listed: {error}"))
        })?
        .into_iter()
        .filter(|tool| tool.read_only && !WITHHELD_TOOLS.contains(&tool.name.as_str()))
        .map(|tool| ToolSpec {
            name: tool.name,
            description: tool.description,
            parameters: tool.input_schema,
        })
        .collect();
    // About a third of the model's window for the findings (some 4 characters a token).
    let window = config.provider.model().context_window as usize;
    let findings: String = findings_prompt(report, &steps)
        .chars()
        .take((window * 4 / 3).max(2_000))
        .collect();
    let mut messages = vec![
        Message::system(system_prompt(config.max_tool_calls)),
        Message::user(findings),
    ];
    let organization_id = recorder.investigation.organization_id;
    loop {
        if spent.model_calls >= config.max_model_calls {
            return Err(Stop::GaveUp(format!(
                "it did not answer within {} model calls",
                config.max_model_calls
            )));
        }
        let admitted = store::reserve_model_call(
            recorder.pool,
            organization_id,
            store::DailyModelBudget {
                calls: config.daily_model_calls_per_organization,
                tokens: config.daily_tokens_per_organization,
                time: config.daily_model_time_per_organization,
            },
        )
        .await
        .map_err(|error| Stop::GaveUp(format!("the model budget could not be read: {error}")))?;
        if !admitted {
            return Err(Stop::GaveUp(
                "the organisation's daily model budget (calls, tokens or time) is spent".into(),
            ));
        }
        spent.model_calls += 1;
        let last_call = spent.model_calls >= config.max_model_calls
            || spent.tool_calls >= config.max_tool_calls;
        let request = Request {
            messages: messages.clone(),
            tools: if last_call { Vec::new() } else { tools.clone() },
            max_output_tokens: config.max_output_tokens,
        };
        let asked = std::time::Instant::now();
        let answer = call_model(config.provider.as_ref(), request).await;
        let elapsed = asked.elapsed();
        let tokens = answer.as_ref().map_or(0, |(_, _, tokens)| *tokens);
        if let Err(error) =
            store::add_model_usage(recorder.pool, organization_id, tokens, elapsed).await
        {
            tracing::warn!(%error, "could not count the model's tokens and time");
        }
        let (text, calls, tokens) = answer?;
        spent.tokens += tokens;
        if spent.tokens > config.max_tokens_per_run {
            return Err(Stop::GaveUp(format!(
                "it used more than {} tokens",
                config.max_tokens_per_run
            )));
        }
        if calls.is_empty() || last_call {
            return parse_draft(&text).map_err(Stop::GaveUp);
        }
        messages.push(Message::assistant(text, calls.clone()));
        for call in calls {
            let answer = if spent.tool_calls >= config.max_tool_calls {
                "Not run: the tool budget of this investigation is spent. Answer now.".to_owned()
            } else {
                spent.tool_calls += 1;
                run_tool(recorder, session, &tools, &call, known_steps).await?
            };
            messages.push(Message::tool_result(call.id, answer));
        }
    }
}

/// One model call, collected: text, tool calls, and the tokens it used.
async fn call_model(
    provider: &dyn Provider,
    request: Request,
) -> Result<(String, Vec<ToolCall>, u64), Stop> {
    let mut stream = provider.stream(request);
    let (mut text, mut calls, mut tokens) = (String::new(), Vec::new(), 0);
    while let Some(event) = stream.next().await {
        let event = event.map_err(|error| match error {
            LlmError::Unreachable(_) | LlmError::Idle(_) => Stop::ModelDown(error.to_string()),
            LlmError::Status { status, .. } if status == 429 || status >= 500 => {
                Stop::ModelDown(error.to_string())
            }
            other => Stop::GaveUp(other.to_string()),
        })?;
        match event {
            StreamEvent::TextDelta(delta) => text.push_str(&delta),
            StreamEvent::ToolCall(call) => calls.push(call),
            StreamEvent::Usage(usage) => tokens = usage.input_tokens + usage.output_tokens,
            StreamEvent::Finished(_) => {}
        }
    }
    Ok((text, calls, tokens))
}

/// Runs the model's tool call as a recorded step; what the model reads back starts with the
/// step's id, so it can cite it.
async fn run_tool(
    recorder: &Recorder<'_>,
    session: &McpSession,
    tools: &[ToolSpec],
    call: &ToolCall,
    known_steps: &mut Vec<i64>,
) -> Result<String, Stop> {
    if !tools.iter().any(|tool| tool.name == call.name) {
        return Ok(format!(
            "There is no tool {:?} here; use one of the tools offered.",
            call.name
        ));
    }
    let arguments: Map<String, Value> = match serde_json::from_str(&call.arguments) {
        Ok(Value::Object(arguments)) => arguments,
        _ => return Ok("The arguments must be one JSON object.".into()),
    };
    let step = recorder
        .call(
            session,
            &format!("synthesis:{}", call.name),
            &call.name,
            Value::Object(arguments),
        )
        .await
        .map_err(|error| match error {
            RunError::LeaseLost => Stop::LeaseLost,
            RunError::Retryable(message) | RunError::Permanent(message) => {
                Stop::GaveUp(format!("its tool call failed: {message}"))
            }
        })?;
    known_steps.push(step.id);
    let text: String = step
        .outcome
        .text
        .chars()
        .take(MAX_TOOL_RESULT_CHARS)
        .collect();
    let status = if step.outcome.is_error {
        " (tool error)"
    } else {
        ""
    };
    Ok(format!("[step {}]{status} {text}", step.id))
}

fn system_prompt(max_tool_calls: u32) -> String {
    format!(
        "You review an automatic investigation of an incident in a monitoring product. You get its \
         recorded steps, each with its id in brackets, and the suspected cause the playbook \
         computed. You may call the read-only tools at most {max_tool_calls} times to check \
         what the steps leave open; each result starts with its own step id. Then answer with \
         one JSON object and nothing else:\n\
         {{\"what_is_going_on\": [{{\"text\": \"...\", \"cites\": [12]}}], \"evidence\": [...], \
         \"ruled_out\": [...], \"next_steps\": [...]}}\n\
         Every claim is one sentence and cites the ids of the steps it rests on; a claim that \
         cites no recorded step is discarded. Use only what the steps show: no invented numbers."
    )
}

fn findings_prompt(report: &Report, steps: &[store::StepText]) -> String {
    let mut prompt = format!("Incident {}\n", report.title);
    match &report.suspected_cause {
        Some(cause) => prompt.push_str(&format!(
            "Suspected cause (playbook, {} confidence): {} {} ({}), deployed {}.\n",
            cause.confidence,
            cause.service,
            cause.version,
            cause.deployment_status,
            cause.started_at.format("%Y-%m-%d %H:%M UTC")
        )),
        None => prompt.push_str("The playbook found no deployment that explains it.\n"),
    }
    prompt.push_str("\nRecorded steps:\n");
    for step in steps {
        let result: String = step
            .result
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
            .chars()
            .take(MAX_STEP_CHARS)
            .collect();
        prompt.push_str(&format!(
            "[{}] {} ({}, {}): {}\n    result: {result}\n",
            step.id, step.name, step.tool, step.status, step.summary
        ));
    }
    prompt
}

/// The JSON object in the model's answer (which small models wrap in prose or code fences).
fn parse_draft(text: &str) -> Result<Draft, String> {
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err("its answer held no JSON object".into());
    };
    if end < start {
        return Err("its answer held no JSON object".into());
    }
    serde_json::from_str(&text[start..=end])
        .map_err(|error| format!("its answer was not the JSON asked for: {error}"))
}

/// Step ids as the model wrote them: `12`, `"12"`, `"[12]"` or `"step 12"`.
fn citations(cites: &[Value]) -> Vec<i64> {
    cites
        .iter()
        .filter_map(|cite| match cite {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text
                .trim_matches(|character: char| !character.is_ascii_digit())
                .parse()
                .ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drafts_are_found_inside_prose_and_fences() {
        let draft = parse_draft(
            "Here is the report:\n```json\n{\"what_is_going_on\": [{\"text\": \"A.\", \"cites\": [1]}]}\n```",
        )
        .unwrap();
        assert_eq!(draft.what_is_going_on.len(), 1);
        assert!(parse_draft("no json here").is_err());
        assert!(parse_draft("} backwards {").is_err());
        assert!(parse_draft("{\"evidence\": 3}").is_err());
    }

    #[test]
    fn citations_are_read_however_the_model_wrote_them() {
        assert_eq!(
            citations(&[
                json!(3),
                json!("4"),
                json!("[5]"),
                json!("step 6"),
                json!(null),
                json!("x")
            ]),
            [3, 4, 5, 6]
        );
    }
}
