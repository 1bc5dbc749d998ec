//! A scripted model server for tests: a real HTTP server on port 0 that answers each model call
//! with the next [`Reply`] of its script, streamed the way OpenAI-compatible servers or Anthropic
//! stream (small chunks with small delays, every event split in two chunks, tool-call arguments in
//! pieces and, for several calls, interleaved), and that records every request it received.
//!
//! ```ignore
//! let model = ScriptedModel::openai(vec![
//!     Reply::tool_call("run_select", json!({"sql": "SELECT 1"})),
//!     Reply::text("One row."),
//! ])
//! .await;
//! let provider = model.provider();
//! // ... run the loop ...
//! assert_eq!(model.requests()[1].body["messages"][2]["role"], "tool");
//! ```

// Shared by several test modules; each uses only part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use internal_host::llm::{
    EventStream, LlmError, LlmSettings, Message, Provider, Request, StreamEvent, ToolSpec,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The model name the scripted server reports and [`ScriptedModel::settings`] uses.
pub const SCRIPTED_MODEL_NAME: &str = "scripted-model";

/// The wire format a scripted server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
}

/// A running scripted server; dropping it stops the server.
pub struct ScriptedModel {
    format: WireFormat,
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// One model call's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    kind: ReplyKind,
    /// Prompt and completion tokens reported, or none.
    usage: Option<(u64, u64)>,
    /// Tool calls go out with a null id (OpenAI) or an empty one (Anthropic).
    null_ids: bool,
    /// The wire's finish reason (`finish_reason` or `stop_reason`), instead of the natural one.
    finish_reason: Option<String>,
    /// The pause before each chunk.
    chunk_delay: Duration,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` if it was none).
    pub body: Value,
    /// The body as sent.
    pub raw_body: String,
}

impl RecordedRequest {
    /// A header's value, if it was sent and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

#[derive(Debug, Clone)]
enum ReplyKind {
    Answer {
        text: String,
        tool_calls: Vec<ScriptedCall>,
    },
    Status {
        status: u16,
        message: String,
    },
    /// The start of a reply, then silence until the client goes away.
    Stall,
    /// A reply whose second event is cut-off JSON.
    MalformedJson,
    /// These bytes, one chunk each, as the whole body.
    Raw(Vec<String>),
}

#[derive(Debug, Clone)]
struct ScriptedCall {
    name: String,
    /// The arguments exactly as they are streamed.
    arguments: String,
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Bodies the client stopped reading before their end.
    closed_early: AtomicUsize,
    closed: Notify,
    replies_started: AtomicUsize,
}

impl ScriptedModel {
    /// An OpenAI-compatible server (`POST /v1/chat/completions`) playing `replies` in order.
    pub async fn openai(replies: Vec<Reply>) -> Self {
        Self::start(WireFormat::OpenAi, replies).await
    }

    /// An Anthropic server (`POST /v1/messages`) playing `replies` in order.
    pub async fn anthropic(replies: Vec<Reply>) -> Self {
        Self::start(WireFormat::Anthropic, replies).await
    }

    /// The server playing `replies` in `format`.
    pub async fn start(format: WireFormat, replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(replies.into()),
            requests: Mutex::new(Vec::new()),
            closed_early: AtomicUsize::new(0),
            closed: Notify::new(),
            replies_started: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .fallback(answer)
            .with_state((format, Arc::clone(&shared)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the scripted model serves");
        });
        Self {
            format,
            address,
            shared,
            server,
        }
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:<port>/v1` for OpenAI, the
    /// bare `http://127.0.0.1:<port>` for Anthropic (which appends `/v1/messages`).
    pub fn url(&self) -> String {
        match self.format {
            WireFormat::OpenAi => format!("http://{}/v1", self.address),
            WireFormat::Anthropic => format!("http://{}", self.address),
        }
    }

    /// Settings for this server: no key, model [`SCRIPTED_MODEL_NAME`], a 10-second idle timeout.
    pub fn settings(&self) -> LlmSettings {
        let settings = match self.format {
            WireFormat::OpenAi => LlmSettings::openai_compatible(self.url(), SCRIPTED_MODEL_NAME),
            WireFormat::Anthropic => LlmSettings::anthropic(self.url(), SCRIPTED_MODEL_NAME),
        };
        LlmSettings {
            idle_timeout_seconds: 10,
            ..settings
        }
    }

    /// A provider built from [`ScriptedModel::settings`].
    pub fn provider(&self) -> Arc<dyn Provider> {
        self.settings()
            .build()
            .expect("the scripted model's settings are valid")
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }

    /// Adds replies to the end of the script.
    pub fn push_replies(&self, replies: Vec<Reply>) {
        self.shared
            .script
            .lock()
            .expect("not poisoned")
            .extend(replies);
    }

    /// Replies of the script not played yet.
    pub fn replies_left(&self) -> usize {
        self.shared.script.lock().expect("not poisoned").len()
    }

    /// How many response bodies the client stopped reading before their end.
    pub fn closed_streams(&self) -> usize {
        self.shared.closed_early.load(Ordering::SeqCst)
    }

    /// Waits until `count` bodies were abandoned by the client (panics after 30 s, so that a
    /// broken cancellation fails the test instead of hanging it).
    pub async fn wait_for_closed_streams(&self, count: usize) {
        let waiting = async {
            loop {
                let notified = self.shared.closed.notified();
                if self.closed_streams() >= count {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the client closed the stream");
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Reply {
    /// A text answer, streamed in small pieces.
    pub fn text(text: impl Into<String>) -> Self {
        Self::answer(text.into(), Vec::new())
    }

    /// One tool call with `arguments` (a JSON object), streamed in pieces.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::answer(String::new(), Vec::new()).and_tool_call(name, arguments)
    }

    /// Several tool calls in one reply, their argument pieces interleaved (OpenAI).
    pub fn tool_calls(calls: Vec<(&str, Value)>) -> Self {
        calls.into_iter().fold(
            Self::answer(String::new(), Vec::new()),
            |reply, (name, arguments)| reply.and_tool_call(name, arguments),
        )
    }

    /// A tool call whose arguments are exactly `arguments`, JSON or not.
    pub fn tool_call_with_raw_arguments(
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        let mut reply = Self::answer(String::new(), Vec::new());
        reply.push_call(name.into(), arguments.into());
        reply
    }

    /// The same reply with one more tool call after its text and calls.
    // By value, so that scripts read `json!(..)` inline.
    #[allow(clippy::needless_pass_by_value)]
    pub fn and_tool_call(mut self, name: impl Into<String>, arguments: Value) -> Self {
        self.push_call(name.into(), arguments.to_string());
        self
    }

    /// What a model in the JSON-schema tool mode writes to call a tool.
    #[allow(clippy::needless_pass_by_value)] // by value, so that scripts read `json!(..)` inline
    pub fn json_tool_call(name: &str, arguments: Value) -> Self {
        Self::text(json!({"tool": name, "arguments": arguments}).to_string())
    }

    /// What a model in the JSON-schema tool mode writes to answer.
    pub fn json_answer(answer: &str) -> Self {
        Self::text(json!({"answer": answer}).to_string())
    }

    /// An error status with a body holding `message` the way the format does.
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        Self::of(ReplyKind::Status {
            status,
            message: message.into(),
        })
    }

    /// The start of a reply, then nothing until the client goes away.
    pub fn stall() -> Self {
        Self::of(ReplyKind::Stall)
    }

    /// A reply whose second event is cut-off JSON.
    pub fn malformed_json() -> Self {
        Self::of(ReplyKind::MalformedJson)
    }

    /// A body of exactly these chunks (the test writes the event-stream text itself).
    pub fn raw(chunks: Vec<String>) -> Self {
        Self::of(ReplyKind::Raw(chunks))
    }

    /// Reports these token counts (the default is 12 in, 7 out).
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Some((input_tokens, output_tokens));
        self
    }

    /// Reports no usage at all.
    pub fn without_usage(mut self) -> Self {
        self.usage = None;
        self
    }

    /// Tool calls without ids: `null` (OpenAI) or `""` (Anthropic).
    pub fn with_null_ids(mut self) -> Self {
        self.null_ids = true;
        self
    }

    /// This finish reason on the wire (`finish_reason` or `stop_reason`), e.g. `length`.
    pub fn with_finish_reason(mut self, reason: impl Into<String>) -> Self {
        self.finish_reason = Some(reason.into());
        self
    }

    /// This pause before each chunk (the default is 2 ms).
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    fn answer(text: String, tool_calls: Vec<ScriptedCall>) -> Self {
        Self::of(ReplyKind::Answer { text, tool_calls })
    }

    fn of(kind: ReplyKind) -> Self {
        Self {
            kind,
            usage: Some((12, 7)),
            null_ids: false,
            finish_reason: None,
            chunk_delay: Duration::from_millis(2),
        }
    }

    fn push_call(&mut self, name: String, arguments: String) {
        if let ReplyKind::Answer { tool_calls, .. } = &mut self.kind {
            tool_calls.push(ScriptedCall { name, arguments });
        }
    }
}

/// Sends a request to `provider` and gathers everything it streams.
pub async fn collect(
    provider: &dyn Provider,
    request: Request,
) -> Vec<Result<StreamEvent, LlmError>> {
    collect_stream(provider.stream(request)).await
}

/// Gathers a whole stream.
pub async fn collect_stream(stream: EventStream) -> Vec<Result<StreamEvent, LlmError>> {
    stream.collect().await
}

/// A request with these messages, the given tools and 256 output tokens.
pub fn request(messages: Vec<Message>, tools: Vec<ToolSpec>) -> Request {
    Request {
        messages,
        tools,
        max_output_tokens: 256,
    }
}

/// A tool taking one string argument `sql`.
pub fn sql_tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: format!("The {name} tool."),
        parameters: json!({
            "type": "object",
            "properties": {"sql": {"type": "string"}},
            "required": ["sql"],
        }),
    }
}

/// The text of all text deltas, joined.
pub fn text_of(events: &[Result<StreamEvent, LlmError>]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Ok(StreamEvent::TextDelta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

async fn answer(
    State((format, shared)): State<(WireFormat, Arc<Shared>)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    shared
        .requests
        .lock()
        .expect("not poisoned")
        .push(RecordedRequest {
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_str(&raw_body).unwrap_or(Value::Null),
            raw_body,
        });
    let next = shared.script.lock().expect("not poisoned").pop_front();
    let Some(reply) = next else {
        return error_response(format, 500, "the scripted model has no reply left");
    };
    let number = shared.replies_started.fetch_add(1, Ordering::SeqCst);
    let (chunks, stall_at_end) = match &reply.kind {
        ReplyKind::Status { status, message } => {
            return error_response(format, *status, message);
        }
        ReplyKind::Raw(chunks) => (
            chunks
                .iter()
                .map(|chunk| chunk.as_bytes().to_vec())
                .collect(),
            false,
        ),
        _ => {
            let events = match format {
                WireFormat::OpenAi => openai_events(&reply, number),
                WireFormat::Anthropic => anthropic_events(&reply, number),
            };
            (split_in_two(events), matches!(reply.kind, ReplyKind::Stall))
        }
    };
    let guard = CloseGuard {
        shared: Arc::clone(&shared),
        finished: false,
    };
    let state = (VecDeque::from(chunks), guard, reply.chunk_delay);
    let body =
        futures_util::stream::unfold(state, move |(mut chunks, mut guard, delay)| async move {
            tokio::time::sleep(delay).await;
            match chunks.pop_front() {
                Some(chunk) => Some((
                    Ok::<_, std::io::Error>(Bytes::from(chunk)),
                    (chunks, guard, delay),
                )),
                None if stall_at_end => {
                    std::future::pending::<()>().await;
                    None
                }
                None => {
                    guard.mark_finished();
                    None
                }
            }
        });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Counts a body dropped before its end: the client went away.
struct CloseGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl CloseGuard {
    fn mark_finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.closed_early.fetch_add(1, Ordering::SeqCst);
            self.shared.closed.notify_waiters();
        }
    }
}

fn error_response(format: WireFormat, status: u16, message: &str) -> Response {
    let body = match format {
        WireFormat::OpenAi => {
            json!({"error": {"message": message, "type": "scripted_error", "code": null}})
        }
        WireFormat::Anthropic => {
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// Each event's bytes as two chunks, cut in the middle (possibly inside a UTF-8 character).
fn split_in_two(events: Vec<String>) -> Vec<Vec<u8>> {
    events
        .into_iter()
        .flat_map(|event| {
            let bytes = event.into_bytes();
            let middle = bytes.len() / 2;
            [bytes[..middle].to_vec(), bytes[middle..].to_vec()]
        })
        .collect()
}

/// Pieces of at most `size` characters.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    characters
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

fn data(json: &Value) -> String {
    format!("data: {json}\n\n")
}

fn openai_events(reply: &Reply, number: usize) -> Vec<String> {
    let chunk = |delta: Value, finish_reason: Value| {
        data(&json!({
            "id": format!("chatcmpl-scripted-{number}"),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": SCRIPTED_MODEL_NAME,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let (text, tool_calls) = match &reply.kind {
        ReplyKind::Answer { text, tool_calls } => (text, tool_calls),
        ReplyKind::Stall => return events,
        ReplyKind::MalformedJson => {
            events.push(
                "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"oops\"\n\n"
                    .to_owned(),
            );
            events.push("data: [DONE]\n\n".to_owned());
            return events;
        }
        ReplyKind::Status { .. } | ReplyKind::Raw(_) => unreachable!("answered elsewhere"),
    };
    for piece in pieces(text, 4) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (index, call) in tool_calls.iter().enumerate() {
        let id = if reply.null_ids {
            Value::Null
        } else {
            json!(format!("call_{number}_{index}"))
        };
        events.push(chunk(
            json!({"tool_calls": [{
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            Value::Null,
        ));
    }
    // The arguments' pieces, one call after the other in each round: interleaved.
    let argument_pieces: Vec<Vec<String>> = tool_calls
        .iter()
        .map(|call| pieces(&call.arguments, 5))
        .collect();
    let rounds = argument_pieces.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for (index, call_pieces) in argument_pieces.iter().enumerate() {
            if let Some(piece) = call_pieces.get(round) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
    }
    let natural = if tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let finish_reason = reply.finish_reason.as_deref().unwrap_or(natural);
    events.push(chunk(json!({}), json!(finish_reason)));
    if let Some((input, output)) = reply.usage {
        events.push(data(&json!({
            "id": format!("chatcmpl-scripted-{number}"),
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn anthropic_events(reply: &Reply, number: usize) -> Vec<String> {
    let event = |name: &str, json: Value| format!("event: {name}\ndata: {json}\n\n");
    let (input_tokens, output_tokens) = reply.usage.unwrap_or((0, 0));
    let mut start_usage = json!({"input_tokens": input_tokens, "output_tokens": 1});
    if reply.usage.is_none() {
        start_usage = json!({});
    }
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_scripted_{number}"),
                "type": "message",
                "role": "assistant",
                "model": SCRIPTED_MODEL_NAME,
                "content": [],
                "stop_reason": null,
                "usage": start_usage,
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let (text, tool_calls) = match &reply.kind {
        ReplyKind::Answer { text, tool_calls } => (text, tool_calls),
        ReplyKind::Stall => return events,
        ReplyKind::MalformedJson => {
            events.push(
                "event: content_block_delta\ndata: {\"type\": \"content_block_delta\",\n\n"
                    .to_owned(),
            );
            return events;
        }
        ReplyKind::Status { .. } | ReplyKind::Raw(_) => unreachable!("answered elsewhere"),
    };
    let mut index = 0;
    if !text.is_empty() {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in pieces(text, 4) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (call_number, call) in tool_calls.iter().enumerate() {
        let id = if reply.null_ids {
            String::new()
        } else {
            format!("toolu_{number}_{call_number}")
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": id, "name": call.name, "input": {},
            }}),
        ));
        for piece in pieces(&call.arguments, 5) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let natural = if tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let stop_reason = reply.finish_reason.as_deref().unwrap_or(natural);
    let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}});
    if reply.usage.is_some() {
        delta["usage"] = json!({"output_tokens": output_tokens});
    }
    events.push(event("message_delta", delta));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}
