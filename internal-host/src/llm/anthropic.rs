//! The Anthropic Messages provider (`POST {base_url}/v1/messages`, streamed): the system prompt
//! travels apart from the messages, tool calls are `tool_use` blocks whose input arrives as
//! `input_json_delta` pieces, and tool results go back as `tool_result` blocks in a user message.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde_json::{Value, json};

use super::http::{self, ApiKey, Decoder, Timeouts};
use super::sse::SseEvent;
use super::{
    EventStream, FinishReason, LlmError, Message, ModelInfo, Provider, Request, Role, StreamEvent,
    ToolCall, Usage,
};

/// The API version this client speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// An Anthropic Messages server.
pub struct Anthropic {
    client: reqwest::Client,
    /// The URL that `/v1/messages` is appended to, e.g. `https://api.anthropic.com`.
    base_url: String,
    model: ModelInfo,
    api_key: Option<ApiKey>,
    timeouts: Timeouts,
}

impl Anthropic {
    /// `model.provider` is set to `anthropic`.
    pub fn new(
        base_url: impl Into<String>,
        mut model: ModelInfo,
        api_key: Option<ApiKey>,
        timeouts: Timeouts,
    ) -> Result<Self, LlmError> {
        model.provider = "anthropic".to_owned();
        Ok(Self {
            client: http::client(timeouts)?,
            base_url: base_url.into(),
            model,
            api_key,
            timeouts,
        })
    }

    /// The JSON body of one call.
    pub(crate) fn request_body(&self, request: &Request) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|message| message.role == Role::System)
            .map(|message| message.content.as_str())
            .collect();
        let mut body = json!({
            "model": self.model.name,
            "max_tokens": request.max_output_tokens,
            "messages": messages(&request.messages),
            "stream": true,
        });
        if !system.is_empty() {
            body["system"] = Value::String(system.join("\n\n"));
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.parameters,
                    })
                })
                .collect();
        }
        body
    }
}

impl Provider for Anthropic {
    fn model(&self) -> &ModelInfo {
        &self.model
    }

    fn stream(&self, request: Request) -> EventStream {
        tracing::debug!(
            model = %self.model.name,
            messages = request.messages.len(),
            tools = request.tools.len(),
            "an Anthropic Messages call"
        );
        let body = self.request_body(&request);
        let mut builder = self
            .client
            .post(http::endpoint(&self.base_url, "v1/messages"))
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.header("x-api-key", key.expose());
        }
        http::stream_reply(
            builder,
            self.timeouts,
            self.api_key.clone(),
            MessagesDecoder::default(),
        )
    }
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Anthropic")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// The conversation without its system messages, as content blocks; neighbours of the same role
/// are merged, since the API wants user and assistant to alternate and all results of one turn's
/// calls in one user message.
fn messages(messages: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", vec![text_block(&message.content)]),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !message.content.is_empty() || message.tool_calls.is_empty() {
                    blocks.push(text_block(&message.content));
                }
                for call in &message.tool_calls {
                    // `input` must be an object; malformed arguments were answered with an error
                    // result already, so an empty object stands in for them.
                    let input = match serde_json::from_str::<Value>(&call.arguments) {
                        Ok(Value::Object(object)) => Value::Object(object),
                        _ => json!({}),
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or("call_unknown"),
                    "content": message.content,
                })],
            ),
        };
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

fn text_block(text: &str) -> Value {
    // The API refuses empty text blocks.
    let text = if text.is_empty() { "(empty)" } else { text };
    json!({"type": "text", "text": text})
}

/// A `tool_use` block while its input arrives.
#[derive(Debug)]
struct PartialToolUse {
    id: String,
    name: String,
    input: String,
}

/// Reads the Messages stream's events.
#[derive(Default)]
struct MessagesDecoder {
    tool_uses: BTreeMap<u64, PartialToolUse>,
    usage: Usage,
    usage_seen: bool,
    stop_reason: Option<String>,
}

impl MessagesDecoder {
    fn finish(&mut self, output: &mut VecDeque<StreamEvent>) {
        // Blocks the server never closed are handed over as they are.
        for (_, tool_use) in std::mem::take(&mut self.tool_uses) {
            output.push_back(StreamEvent::ToolCall(tool_call(tool_use)));
        }
        if self.usage_seen {
            output.push_back(StreamEvent::Usage(self.usage));
        }
        let reason = match self.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence") => FinishReason::Stop,
            Some("tool_use") => FinishReason::ToolCalls,
            Some("max_tokens") => FinishReason::Length,
            _ => FinishReason::Other,
        };
        output.push_back(StreamEvent::Finished(reason));
    }
}

fn tool_call(tool_use: PartialToolUse) -> ToolCall {
    ToolCall {
        id: if tool_use.id.is_empty() {
            http::made_up_call_id()
        } else {
            tool_use.id
        },
        name: tool_use.name,
        arguments: if tool_use.input.trim().is_empty() {
            "{}".to_owned()
        } else {
            tool_use.input
        },
    }
}

impl Decoder for MessagesDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        output: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, LlmError> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|error| LlmError::Protocol(format!("an event is not valid JSON ({error})")))?;
        // The type inside the data is authoritative; the `event:` line repeats it.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        let count = |usage: Option<&Value>, field: &str| {
            usage
                .and_then(|usage| usage.get(field))
                .and_then(Value::as_u64)
        };
        match kind {
            "message_start" => {
                let usage = data.get("message").and_then(|message| message.get("usage"));
                if let Some(input) = count(usage, "input_tokens") {
                    self.usage_seen = true;
                    // Cached prompt tokens fill the context window too.
                    self.usage.input_tokens = input
                        + count(usage, "cache_creation_input_tokens").unwrap_or(0)
                        + count(usage, "cache_read_input_tokens").unwrap_or(0);
                }
                if let Some(output_tokens) = count(usage, "output_tokens") {
                    self.usage.output_tokens = output_tokens;
                }
            }
            "content_block_start" => {
                let block = data.get("content_block");
                let block_type = block
                    .and_then(|block| block.get("type"))
                    .and_then(Value::as_str);
                let field = |name: &str| {
                    block
                        .and_then(|block| block.get(name))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match block_type {
                    Some("tool_use") => {
                        http::check_assembled(self.tool_uses.len() + 1, 0)?;
                        self.tool_uses.insert(
                            index,
                            PartialToolUse {
                                id: field("id"),
                                name: field("name"),
                                input: String::new(),
                            },
                        );
                    }
                    Some("text") => {
                        let text = field("text");
                        if !text.is_empty() {
                            output.push_back(StreamEvent::TextDelta(text));
                        }
                    }
                    // Thinking and other blocks are not part of the answer.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                let piece = |name: &str| {
                    delta
                        .and_then(|delta| delta.get(name))
                        .and_then(Value::as_str)
                };
                match delta
                    .and_then(|delta| delta.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("text_delta") => {
                        if let Some(text) = piece("text").filter(|text| !text.is_empty()) {
                            output.push_back(StreamEvent::TextDelta(text.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let Some(tool_use) = self.tool_uses.get_mut(&index) else {
                            return Err(LlmError::Protocol(format!(
                                "input for block {index}, which is no tool_use block"
                            )));
                        };
                        tool_use
                            .input
                            .push_str(piece("partial_json").unwrap_or_default());
                        let assembled = self
                            .tool_uses
                            .values()
                            .map(|tool_use| tool_use.input.len())
                            .sum();
                        http::check_assembled(self.tool_uses.len(), assembled)?;
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(tool_use) = self.tool_uses.remove(&index) {
                    output.push_back(StreamEvent::ToolCall(tool_call(tool_use)));
                }
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|delta| delta.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_owned());
                }
                let usage = data.get("usage");
                if let Some(output_tokens) = count(usage, "output_tokens") {
                    self.usage_seen = true;
                    self.usage.output_tokens = output_tokens;
                }
                if let Some(input) = count(usage, "input_tokens").filter(|input| *input > 0) {
                    self.usage.input_tokens = input
                        + count(usage, "cache_creation_input_tokens").unwrap_or(0)
                        + count(usage, "cache_read_input_tokens").unwrap_or(0);
                }
            }
            "message_stop" => {
                self.finish(output);
                return Ok(true);
            }
            "error" => {
                let error = data.get("error");
                let error_type = error
                    .and_then(|error| error.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let status = match error_type {
                    "invalid_request_error" => 400,
                    "authentication_error" => 401,
                    "permission_error" => 403,
                    "not_found_error" => 404,
                    "request_too_large" => 413,
                    "rate_limit_error" => 429,
                    "overloaded_error" => 529,
                    _ => 500,
                };
                let message = http::message_of(&data).unwrap_or_else(|| error_type.to_owned());
                return Err(LlmError::Status {
                    status,
                    message: http::cut(&message, 300),
                });
            }
            // `ping` and event types added later.
            _ => {}
        }
        Ok(false)
    }

    fn on_end(&mut self, output: &mut VecDeque<StreamEvent>) -> Result<(), LlmError> {
        if self.stop_reason.is_none() {
            return Err(LlmError::Protocol(
                "the stream ended before the reply was complete".to_owned(),
            ));
        }
        self.finish(output);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_one_turn_share_a_user_message() {
        let calls = vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "a".into(),
                arguments: r#"{"x":1}"#.into(),
            },
            ToolCall {
                id: "toolu_2".into(),
                name: "b".into(),
                arguments: "not json".into(),
            },
        ];
        let converted = messages(&[
            Message::system("ignored here"),
            Message::user("go"),
            Message::assistant("", calls),
            Message::tool_result("toolu_1", "one"),
            Message::tool_result("toolu_2", "two"),
        ]);
        assert_eq!(converted.len(), 3);
        assert_eq!(converted[1]["content"][0]["input"], json!({"x": 1}));
        assert_eq!(converted[1]["content"][1]["input"], json!({}));
        let results = converted[2]["content"].as_array().expect("blocks");
        assert_eq!(results.len(), 2);
        assert_eq!(results[1]["tool_use_id"], "toolu_2");
    }
}
