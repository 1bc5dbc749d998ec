//! What pages show of a conversation, rebuilt from the durable event log: per turn, its question,
//! the answer's Markdown (safe HTML), a trace row per tool call, approval cards, notices and the
//! closing summary, in the order they happened.

use std::collections::HashMap;

use askama::Template;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::conversations::TurnRecord;
use crate::events::{CallStatus, StoredEvent, ToolCallOutcome, TurnEvent, TurnStatus};
use crate::web::{chart, markdown};

/// One turn, as HTML, with the last sequence it includes.
#[derive(Template)]
#[template(path = "turn.html")]
pub(crate) struct TurnView<'a> {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub question: &'a str,
    pub status_class: &'static str,
    pub status_label: String,
    pub summary: Option<String>,
    pub items: Vec<String>,
    pub last_sequence: i64,
    pub can_stop: bool,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TraceRow<'a> {
    server: &'a str,
    tool: &'a str,
    arguments: String,
    status_class: &'static str,
    status_label: &'static str,
    duration: Option<String>,
    rows: Option<u64>,
    bytes: Option<String>,
    truncated: bool,
    sql: Option<&'a str>,
    text_label: &'static str,
    text: Option<&'a str>,
    chart: Option<String>,
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalCard<'a> {
    id: Uuid,
    conversation_id: Uuid,
    server: &'a str,
    tool: &'a str,
    summary: Option<&'a str>,
    plan: String,
    status: &'a str,
    status_label: String,
    actionable: bool,
    expires_at: String,
    csrf: &'a str,
}

/// Pieces of a turn, in order, before rendering.
enum Item<'a> {
    Answer(String),
    Call {
        server: &'a str,
        tool: &'a str,
        arguments: &'a Value,
        outcome: Option<&'a ToolCallOutcome>,
    },
    Approval {
        id: Uuid,
        server: &'a str,
        tool: &'a str,
        plan: &'a Value,
        expires_at: DateTime<Utc>,
    },
    Notice(&'a str),
}

/// Everything a turn view needs besides its events.
pub(crate) struct TurnInputs<'a> {
    pub conversation_id: Uuid,
    pub csrf: &'a str,
    /// Approval statuses as stored (the table is the truth; events tell the story).
    pub approval_statuses: &'a HashMap<Uuid, String>,
    pub now: DateTime<Utc>,
}

impl<'a> TurnView<'a> {
    /// The view of `turn` from its events (oldest first).
    pub(crate) fn build(
        turn: &'a TurnRecord,
        events: &[&'a StoredEvent],
        inputs: &TurnInputs<'a>,
    ) -> Self {
        let mut items: Vec<Item<'a>> = Vec::new();
        let mut calls: HashMap<&'a str, usize> = HashMap::new();
        let mut summary = None;
        let mut model = None;
        let mut last_sequence = 0;
        for stored in events {
            last_sequence = last_sequence.max(stored.sequence);
            match &stored.event {
                TurnEvent::TurnStarted { model: name, .. } => model = Some(name.as_str()),
                TurnEvent::Text { text } => match items.last_mut() {
                    Some(Item::Answer(answer)) => answer.push_str(text),
                    _ => items.push(Item::Answer(text.clone())),
                },
                TurnEvent::ToolCallStarted {
                    call_id,
                    server,
                    tool,
                    arguments,
                } => {
                    calls.insert(call_id.as_str(), items.len());
                    items.push(Item::Call {
                        server,
                        tool,
                        arguments,
                        outcome: None,
                    });
                }
                TurnEvent::ToolCallFinished { call_id, outcome } => {
                    if let Some(index) = calls.get(call_id.as_str())
                        && let Some(Item::Call { outcome: slot, .. }) = items.get_mut(*index)
                    {
                        *slot = Some(outcome);
                    }
                }
                TurnEvent::ApprovalRequested {
                    approval_id,
                    server,
                    tool,
                    plan,
                    expires_at,
                } => items.push(Item::Approval {
                    id: *approval_id,
                    server,
                    tool,
                    plan,
                    expires_at: *expires_at,
                }),
                // The card reads the stored status; the decision needs no item of its own.
                TurnEvent::ApprovalDecided { .. } => {}
                TurnEvent::Notice { text } => items.push(Item::Notice(text)),
                TurnEvent::TurnFinished {
                    model_calls,
                    tool_calls,
                    input_tokens,
                    output_tokens,
                    elapsed_ms,
                    ..
                } => {
                    summary = Some(format!(
                        "{model_calls} model call(s) · {tool_calls} tool call(s) · {input_tokens} tokens in, {output_tokens} out · {}",
                        seconds(*elapsed_ms)
                    ));
                }
            }
        }
        if let Some(model) = model {
            let line = format!("answered by {model}");
            summary = Some(match summary {
                Some(summary) => format!("{summary} · {line}"),
                None => line,
            });
        }
        let waiting = turn.status == TurnStatus::WaitingForApproval;
        let rendered = items
            .iter()
            .map(|item| render_item(item, inputs, waiting))
            .collect();
        let (status_class, status_label) = status_of(turn.status);
        Self {
            id: turn.id,
            conversation_id: inputs.conversation_id,
            question: &turn.question,
            status_class,
            status_label: status_label.to_owned(),
            summary,
            items: rendered,
            last_sequence,
            can_stop: matches!(
                turn.status,
                TurnStatus::Running | TurnStatus::WaitingForApproval
            ),
            csrf: inputs.csrf,
        }
    }
}

fn render_item(item: &Item<'_>, inputs: &TurnInputs<'_>, waiting: bool) -> String {
    let rendered = match item {
        Item::Answer(text) => {
            return format!("<div class=\"answer\">{}</div>", markdown::render(text));
        }
        Item::Notice(text) => {
            return format!("<p class=\"notice\">{}</p>", markdown::escape(text));
        }
        Item::Call {
            server,
            tool,
            arguments,
            outcome,
        } => trace_row(server, tool, arguments, *outcome).render(),
        Item::Approval {
            id,
            server,
            tool,
            plan,
            expires_at,
        } => {
            let status = inputs
                .approval_statuses
                .get(id)
                .map(String::as_str)
                .unwrap_or("pending");
            let actionable = status == "pending" && waiting && *expires_at > inputs.now;
            let status_label = match status {
                "confirmed" => "You confirmed this change.".to_owned(),
                "rejected" => "You rejected this change.".to_owned(),
                "expired" => "This request expired; nothing changed.".to_owned(),
                "pending" if *expires_at <= inputs.now => {
                    "This request expired; nothing changed.".to_owned()
                }
                _ => "Waiting.".to_owned(),
            };
            ApprovalCard {
                id: *id,
                conversation_id: inputs.conversation_id,
                server,
                tool,
                summary: plan
                    .get("summary")
                    .or_else(|| plan.get("description"))
                    .and_then(Value::as_str),
                plan: serde_json::to_string_pretty(plan).unwrap_or_default(),
                status,
                status_label,
                actionable,
                expires_at: expires_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                csrf: inputs.csrf,
            }
            .render()
        }
    };
    rendered.unwrap_or_else(|error| {
        tracing::error!(%error, "cannot render a part of a turn");
        "<p class=\"notice\">This part could not be shown.</p>".to_owned()
    })
}

fn trace_row<'a>(
    server: &'a str,
    tool: &'a str,
    arguments: &Value,
    outcome: Option<&'a ToolCallOutcome>,
) -> TraceRow<'a> {
    let arguments = serde_json::to_string_pretty(arguments).unwrap_or_default();
    let Some(outcome) = outcome else {
        return TraceRow {
            server,
            tool,
            arguments,
            status_class: "running",
            status_label: "running…",
            duration: None,
            rows: None,
            bytes: None,
            truncated: false,
            sql: None,
            text_label: "Result",
            text: None,
            chart: None,
        };
    };
    let (status_class, status_label, text_label) = match outcome.status {
        CallStatus::Ok => ("ok", "ok", "Result (as the model read it)"),
        CallStatus::ToolError => ("tool-error", "tool error", "The tool's error"),
        CallStatus::TransportError => (
            "transport-error",
            "transport error",
            "The server could not be reached or broke the protocol",
        ),
        CallStatus::Refused => ("refused", "not run", "Why the host did not run it"),
        CallStatus::AwaitingApproval => (
            "awaiting-approval",
            "waiting for your approval",
            "What the model was told",
        ),
    };
    TraceRow {
        server,
        tool,
        arguments,
        status_class,
        status_label,
        duration: Some(seconds(outcome.duration_ms)),
        rows: outcome.rows,
        bytes: Some(bytes(outcome.bytes)),
        truncated: outcome.truncated,
        sql: outcome.sql.as_deref(),
        text_label,
        text: Some(&outcome.text),
        chart: outcome.chart.as_ref().map(chart::render),
    }
}

/// A status's CSS class and label.
pub(crate) fn status_of(status: TurnStatus) -> (&'static str, &'static str) {
    match status {
        TurnStatus::Running => ("running", "Working…"),
        TurnStatus::WaitingForApproval => ("waiting", "Waiting for your approval"),
        TurnStatus::Completed => ("completed", "Done"),
        TurnStatus::Stopped => ("stopped", "Stopped"),
        TurnStatus::Failed => ("failed", "Failed"),
    }
}

fn seconds(milliseconds: u64) -> String {
    if milliseconds < 1000 {
        return format!("{milliseconds} ms");
    }
    format!("{:.1} s", milliseconds as f64 / 1000.0)
}

fn bytes(count: u64) -> String {
    match count {
        0..1024 => format!("{count} B"),
        1024..1_048_576 => format!("{:.1} KiB", count as f64 / 1024.0),
        _ => format!("{:.1} MiB", count as f64 / 1_048_576.0),
    }
}
