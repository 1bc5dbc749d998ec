//! The OpenAI-compatible Chat Completions provider (`POST {base_url}/chat/completions`, streamed),
//! which OpenAI, Ollama, vLLM, LM Studio and llama.cpp's llama-server all speak. Tool-call deltas
//! are assembled by their `index`; a call the server sends without an id gets a made-up one, so no
//! null id ever goes back (llama-server answers 500 to that).
//!
//! [`ToolMode::JsonSchema`] serves weak local models whose native tool calling does not work: the
//! tools are described in the system message and the reply is constrained by `response_format` to
//! one JSON object, either `{"tool": .., "arguments": {..}}` or `{"answer": ".."}`, which the
//! provider turns into a tool call or text. Until the model has seen a tool result after the
//! user's latest message, only the tool-call shape is allowed: a weak model otherwise answers
//! from nothing, and an answer about the product should rest on its data.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde_json::{Value, json};

use super::http::{self, ApiKey, Decoder, Timeouts};
use super::sse::SseEvent;
use super::{
    EventStream, FinishReason, LlmError, Message, ModelInfo, Provider, Request, Role, StreamEvent,
    ToolCall, ToolSpec, Usage,
};
use crate::agent::schema;
use crate::agent::tools::{HOST, split_name};

/// How tools are offered to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ToolMode {
    /// The server's own `tools` and streamed `tool_calls`.
    #[default]
    Native,
    /// Tools described in the prompt, the reply constrained to a JSON schema (for weak local
    /// models on servers such as llama-server).
    JsonSchema,
}

/// A Chat Completions server.
pub struct OpenAiCompatible {
    client: reqwest::Client,
    /// The URL that `/chat/completions` is appended to, e.g. `https://api.openai.com/v1`.
    base_url: String,
    model: ModelInfo,
    api_key: Option<ApiKey>,
    tool_mode: ToolMode,
    timeouts: Timeouts,
    /// OpenAI's own API refuses `max_tokens` for its newer models; the compatible servers do not
    /// all know `max_completion_tokens`.
    token_limit_field: &'static str,
}

impl OpenAiCompatible {
    /// `model.provider` is set to `openai-compatible`.
    pub fn new(
        base_url: impl Into<String>,
        mut model: ModelInfo,
        api_key: Option<ApiKey>,
        tool_mode: ToolMode,
        timeouts: Timeouts,
    ) -> Result<Self, LlmError> {
        model.provider = "openai-compatible".to_owned();
        let base_url = base_url.into();
        let is_openai = reqwest::Url::parse(&base_url)
            .is_ok_and(|url| url.host_str() == Some("api.openai.com"));
        Ok(Self {
            client: http::client(timeouts)?,
            token_limit_field: if is_openai {
                "max_completion_tokens"
            } else {
                "max_tokens"
            },
            base_url,
            model,
            api_key,
            tool_mode,
            timeouts,
        })
    }

    /// The JSON body of one call.
    pub(crate) fn request_body(&self, request: &Request) -> Value {
        let json_schema_mode = self.tool_mode == ToolMode::JsonSchema && !request.tools.is_empty();
        let messages = if json_schema_mode {
            json_schema_messages(&request.messages, &request.tools)
        } else {
            native_messages(&request.messages)
        };
        let mut body = json!({
            "model": self.model.name,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        body[self.token_limit_field] = json!(request.max_output_tokens);
        if json_schema_mode {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "tool_call_or_answer",
                    "schema": reply_schema(&request.tools, must_look_first(&request.messages)),
                },
            });
        } else if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": tool.parameters,
                        },
                    })
                })
                .collect();
        }
        body
    }
}

impl Provider for OpenAiCompatible {
    fn model(&self) -> &ModelInfo {
        &self.model
    }

    fn stream(&self, request: Request) -> EventStream {
        tracing::debug!(
            model = %self.model.name,
            messages = request.messages.len(),
            tools = request.tools.len(),
            tool_mode = ?self.tool_mode,
            "a Chat Completions call"
        );
        let body = self.request_body(&request);
        let mut builder = self
            .client
            .post(http::endpoint(&self.base_url, "chat/completions"))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let json_schema_mode = self.tool_mode == ToolMode::JsonSchema && !request.tools.is_empty();
        let decoder = ChatDecoder::new(json_schema_mode);
        http::stream_reply(builder, self.timeouts, self.api_key.clone(), decoder)
    }
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OpenAiCompatible")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("tool_mode", &self.tool_mode)
            .field("timeouts", &self.timeouts)
            .field("token_limit_field", &self.token_limit_field)
            .finish()
    }
}

fn native_messages(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|message| match message.role {
            Role::System => json!({"role": "system", "content": message.content}),
            Role::User => json!({"role": "user", "content": message.content}),
            Role::Assistant if message.tool_calls.is_empty() => {
                json!({"role": "assistant", "content": message.content})
            }
            Role::Assistant => {
                let tool_calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        })
                    })
                    .collect();
                let content = if message.content.is_empty() {
                    Value::Null
                } else {
                    Value::String(message.content.clone())
                };
                json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
            }
            Role::Tool => json!({
                "role": "tool",
                // Never null: servers refuse a result they cannot match to a call.
                "tool_call_id": message.tool_call_id.as_deref().unwrap_or("call_unknown"),
                "content": message.content,
            }),
        })
        .collect()
}

/// The reply of [`ToolMode::JsonSchema`]: a call of one of the tools, or an answer.
fn reply_schema(tools: &[ToolSpec], tool_call_only: bool) -> Value {
    // One branch per tool, its arguments held to the tool's own schema: a weak model then writes
    // arguments the host's schema check accepts, so its calls reach the server.
    let tool_call = json!({
        "anyOf": tools.iter().map(|tool| json!({
            "type": "object",
            "properties": {
                "tool": {"type": "string", "enum": [tool.name]},
                "arguments": grammar_safe(&tool.parameters),
            },
            "required": ["tool", "arguments"],
            "additionalProperties": false,
        })).collect::<Vec<_>>(),
    });
    if tool_call_only {
        return tool_call;
    }
    json!({
        "anyOf": [
            tool_call,
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": false,
            },
        ],
    })
}

/// The longest string and the most items an argument may have in the grammar, where its schema
/// allows more (or sets no bound): a weak model otherwise writes one string until the token limit cuts the
/// reply, which then holds no call at all.
const GRAMMAR_MAX_LENGTH: u64 = 500;
const GRAMMAR_MAX_ITEMS: u64 = 20;
/// `$ref`s nested deeper than this become "any value" rather than being followed forever.
const GRAMMAR_MAX_REF_DEPTH: usize = 16;

/// A tool's input schema as a grammar: the part that servers turning schemas into grammars all
/// accept (types, properties, required, items, enums, bounds), with local `$ref`s resolved, objects
/// closed to other properties, and strings and arrays bounded. Patterns and formats are dropped;
/// the host checks the arguments against the full schema before any call, and everything the
/// grammar allows passes that check.
fn grammar_safe(schema: &Value) -> Value {
    grammar_of(schema, schema, 0)
}

fn grammar_of(schema: &Value, root: &Value, depth: usize) -> Value {
    const KEPT: [&str; 12] = [
        "type",
        "required",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
    ];
    let Some(object) = schema.as_object() else {
        return json!({});
    };
    if let Some(reference) = object.get("$ref") {
        let target = reference
            .as_str()
            .and_then(|reference| schema::resolve(root, reference));
        return match target {
            Some(target) if depth < GRAMMAR_MAX_REF_DEPTH => grammar_of(target, root, depth + 1),
            _ => json!({}),
        };
    }
    let mut safe = serde_json::Map::new();
    for (key, value) in object {
        if KEPT.contains(&key.as_str()) {
            safe.insert(key.clone(), value.clone());
        } else if key == "properties"
            && let Some(properties) = value.as_object()
        {
            let properties = properties
                .iter()
                .map(|(name, property)| (name.clone(), grammar_of(property, root, depth)))
                .collect();
            safe.insert(key.clone(), Value::Object(properties));
            safe.insert("additionalProperties".into(), Value::Bool(false));
        } else if key == "items" {
            safe.insert(key.clone(), grammar_of(value, root, depth));
        } else if let ("anyOf" | "oneOf" | "allOf", Some(branches)) =
            (key.as_str(), value.as_array())
        {
            let name = if key == "allOf" { "allOf" } else { "anyOf" };
            let branches = branches
                .iter()
                .map(|branch| grammar_of(branch, root, depth))
                .collect();
            safe.insert(name.into(), Value::Array(branches));
        }
    }
    let free = !safe.contains_key("enum") && !safe.contains_key("const");
    if free && allows_type(&safe, "string") {
        bound(&mut safe, "minLength", "maxLength", GRAMMAR_MAX_LENGTH);
    }
    if free && allows_type(&safe, "array") {
        bound(&mut safe, "minItems", "maxItems", GRAMMAR_MAX_ITEMS);
    }
    Value::Object(safe)
}

fn allows_type(schema: &serde_json::Map<String, Value>, name: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(kind)) => kind == name,
        Some(Value::Array(kinds)) => kinds.iter().any(|kind| kind == name),
        _ => false,
    }
}

/// Sets `maximum` to at most `cap`, never below the schema's own `minimum`.
fn bound(schema: &mut serde_json::Map<String, Value>, minimum: &str, maximum: &str, cap: u64) {
    let least = schema.get(minimum).and_then(Value::as_u64).unwrap_or(0);
    let most = schema
        .get(maximum)
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
        .min(cap.max(least));
    schema.insert(maximum.to_owned(), Value::from(most));
}

/// True while no call of a server's tool followed the user's latest message: the model must look
/// at the product's data before it answers (the host's own tools, such as activating a capability
/// group, give it none).
fn must_look_first(messages: &[Message]) -> bool {
    !messages
        .iter()
        .rev()
        .take_while(|message| message.role != Role::User)
        .flat_map(|message| &message.tool_calls)
        .any(|call| split_name(&call.name).is_none_or(|(server, _)| server != HOST))
}

/// What [`ToolMode::JsonSchema`] tells the model about the tools and the reply's shape.
fn json_schema_instructions(tools: &[ToolSpec]) -> String {
    let mut text = String::from(
        "You can call tools. Reply with exactly one JSON object and nothing else:\n\
         - to call a tool: {\"tool\": \"<tool name>\", \"arguments\": {<the tool's arguments>}}\n\
         - to answer the user: {\"answer\": \"<your answer>\"}\n\
         After a tool call, the next message gives you the tool's result. Call a tool before \
         you answer a new question: answers rest on the product's data.\n\nThe tools:\n",
    );
    for tool in tools {
        text.push_str(&format!(
            "- {}: {}\n  arguments (JSON Schema): {}\n",
            tool.name, tool.description, tool.parameters
        ));
    }
    text
}

/// The conversation for [`ToolMode::JsonSchema`], in roles every chat template accepts: one
/// leading system message holding every system text and then the instructions, earlier calls and
/// answers written as the JSON the model is asked to write, tool results as user messages, and
/// neighbours of the same role merged (some templates insist that user and assistant alternate).
fn json_schema_messages(messages: &[Message], tools: &[ToolSpec]) -> Vec<Value> {
    let tool_names: HashMap<&str, &str> = messages
        .iter()
        .flat_map(|message| &message.tool_calls)
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect();
    let mut system: Vec<&str> = messages
        .iter()
        .filter(|message| message.role == Role::System)
        .map(|message| message.content.as_str())
        .collect();
    let instructions = json_schema_instructions(tools);
    system.push(&instructions);
    let mut turns: Vec<(&'static str, String)> = vec![("system", system.join("\n\n"))];
    for message in messages {
        let (role, content) = match message.role {
            Role::System => continue,
            Role::User => ("user", message.content.clone()),
            Role::Assistant if message.tool_calls.is_empty() => {
                ("assistant", json!({"answer": message.content}).to_string())
            }
            Role::Assistant => {
                let calls: Vec<String> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        let arguments = serde_json::from_str::<Value>(&call.arguments)
                            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                        json!({"tool": call.name, "arguments": arguments}).to_string()
                    })
                    .collect();
                ("assistant", calls.join("\n"))
            }
            Role::Tool => {
                let name = message
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| tool_names.get(id))
                    .copied()
                    .unwrap_or("the tool");
                (
                    "user",
                    format!("The result of {name}:\n{}", message.content),
                )
            }
        };
        match turns.last_mut() {
            Some((last_role, last_content)) if *last_role == role => {
                last_content.push_str("\n\n");
                last_content.push_str(&content);
            }
            _ => turns.push((role, content)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// A tool call while its deltas arrive.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Reads `chat.completion.chunk` events.
struct ChatDecoder {
    /// In JSON-schema mode the text is the JSON reply, read whole at the end.
    json_schema_mode: bool,
    collected_text: String,
    calls: BTreeMap<u64, PartialCall>,
    last_index: Option<u64>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl ChatDecoder {
    fn new(json_schema_mode: bool) -> Self {
        Self {
            json_schema_mode,
            collected_text: String::new(),
            calls: BTreeMap::new(),
            last_index: None,
            finish_reason: None,
            usage: None,
        }
    }

    fn read_tool_call_delta(&mut self, delta: &Value) {
        let id = delta
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let index = match delta.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Without an index, a new id starts a new call; anything else continues the last.
            None => match (self.last_index, id) {
                (Some(last), Some(id))
                    if self.calls.get(&last).and_then(|call| call.id.as_deref()) != Some(id) =>
                {
                    last + 1
                }
                (Some(last), _) => last,
                (None, _) => 0,
            },
        };
        self.last_index = Some(index);
        let call = self.calls.entry(index).or_default();
        if call.id.is_none() {
            call.id = id.map(str::to_owned);
        }
        let function = delta.get("function");
        if let Some(name) = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str)
        {
            // Some servers repeat the name in every delta; it arrives whole.
            if call.name.is_empty() {
                call.name = name.to_owned();
            }
        }
        match function.and_then(|function| function.get("arguments")) {
            Some(Value::String(piece)) => call.arguments.push_str(piece),
            // A server that sends the arguments as an object rather than a string.
            Some(Value::Object(object)) => {
                call.arguments
                    .push_str(&Value::Object(object.clone()).to_string());
            }
            _ => {}
        }
    }

    fn finish(&mut self, output: &mut VecDeque<StreamEvent>) -> Result<(), LlmError> {
        let mut has_calls = false;
        for (_, call) in std::mem::take(&mut self.calls) {
            has_calls = true;
            output.push_back(StreamEvent::ToolCall(ToolCall {
                id: call.id.unwrap_or_else(http::made_up_call_id),
                name: call.name,
                arguments: if call.arguments.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    call.arguments
                },
            }));
        }
        let mut reason = finish_reason(self.finish_reason.as_deref(), has_calls);
        if self.json_schema_mode {
            let text = std::mem::take(&mut self.collected_text);
            match parse_json_schema_reply(&text) {
                JsonSchemaReply::ToolCall(call) => {
                    output.push_back(StreamEvent::ToolCall(call));
                    if reason == FinishReason::Stop {
                        reason = FinishReason::ToolCalls;
                    }
                }
                JsonSchemaReply::Answer(answer) if !answer.is_empty() => {
                    output.push_back(StreamEvent::TextDelta(answer));
                }
                JsonSchemaReply::Answer(_) => {}
                JsonSchemaReply::CutCall => {
                    let cause = if reason == FinishReason::Length {
                        "it reached the limit of output tokens"
                    } else {
                        "it is not valid JSON"
                    };
                    return Err(LlmError::Protocol(format!(
                        "the model began a tool call but did not finish it: {cause}"
                    )));
                }
            }
        }
        if let Some(usage) = self.usage.take() {
            output.push_back(StreamEvent::Usage(usage));
        }
        output.push_back(StreamEvent::Finished(reason));
        Ok(())
    }
}

impl Decoder for ChatDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        output: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.finish(output)?;
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|error| LlmError::Protocol(format!("a chunk is not valid JSON ({error})")))?;
        if let Some(error) = chunk.get("error") {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (400..600).contains(code))
                .unwrap_or(500);
            let message = http::message_of(&chunk).unwrap_or_else(|| "no message".to_owned());
            return Err(LlmError::Status {
                status,
                message: http::cut(&message, 300),
            });
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
            // Handed over just before the finish, after the calls and the JSON-schema reply.
            self.usage = Some(Usage {
                input_tokens: count("prompt_tokens"),
                output_tokens: count("completion_tokens"),
            });
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first());
        let Some(choice) = choice else {
            return Ok(false);
        };
        let delta = choice.get("delta");
        if let Some(text) = delta
            .and_then(|delta| delta.get("content"))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
        {
            if self.json_schema_mode {
                self.collected_text.push_str(text);
            } else {
                output.push_back(StreamEvent::TextDelta(text.to_owned()));
            }
        }
        if let Some(calls) = delta
            .and_then(|delta| delta.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for call in calls {
                self.read_tool_call_delta(call);
            }
        }
        let assembled = self.collected_text.len()
            + self
                .calls
                .values()
                .map(|call| call.name.len() + call.arguments.len())
                .sum::<usize>();
        http::check_assembled(self.calls.len(), assembled)?;
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(false)
    }

    fn on_end(&mut self, output: &mut VecDeque<StreamEvent>) -> Result<(), LlmError> {
        // Some servers end the body without `[DONE]`; a finish reason says the reply is whole.
        if self.finish_reason.is_none() {
            return Err(LlmError::Protocol(
                "the stream ended before the reply was complete".to_owned(),
            ));
        }
        self.finish(output)
    }
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        // Some servers say `stop` after tool calls.
        Some("stop") | None if has_calls => FinishReason::ToolCalls,
        Some("stop") | None => FinishReason::Stop,
        Some(_) => FinishReason::Other,
    }
}

#[derive(Debug, PartialEq)]
enum JsonSchemaReply {
    ToolCall(ToolCall),
    Answer(String),
    /// A tool call begun and not finished (cut by the token limit): a failed model call, never
    /// text for the person to read.
    CutCall,
}

/// The JSON-schema mode's reply. An answer cut by the token limit is handed over as far as it
/// was written; what is not the agreed JSON at all (a server that ignored the schema) is handed
/// over as text, so the conversation still goes on.
fn parse_json_schema_reply(text: &str) -> JsonSchemaReply {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|inner| inner.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    let Ok(Value::Object(reply)) = serde_json::from_str::<Value>(unfenced) else {
        if let Some(answer) = cut_answer(unfenced) {
            return JsonSchemaReply::Answer(answer);
        }
        if after_key(unfenced, "tool").is_some() {
            return JsonSchemaReply::CutCall;
        }
        return JsonSchemaReply::Answer(text.to_owned());
    };
    if let Some(name) = reply.get("tool").and_then(Value::as_str) {
        let arguments = match reply.get("arguments") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(written)) => written.clone(),
            Some(other) => other.to_string(),
        };
        return JsonSchemaReply::ToolCall(ToolCall {
            id: http::made_up_call_id(),
            name: name.to_owned(),
            arguments,
        });
    }
    match reply.get("answer") {
        Some(Value::String(answer)) => JsonSchemaReply::Answer(answer.clone()),
        _ => JsonSchemaReply::Answer(text.to_owned()),
    }
}

/// What follows `{"key":` at the start of `text`, when it starts so.
fn after_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = text.strip_prefix('{')?.trim_start().strip_prefix('"')?;
    Some(
        rest.strip_prefix(key)?
            .strip_prefix('"')?
            .trim_start()
            .strip_prefix(':')?
            .trim_start(),
    )
}

/// The answer of a reply `{"answer": "...` that ended before its string did, as far as it was
/// written (an escape cut in the middle is dropped).
fn cut_answer(text: &str) -> Option<String> {
    let written = after_key(text, "answer")?.strip_prefix('"')?;
    // At most `\uXXX` (five bytes) of a cut escape, or the string's own closing quote, is left over.
    (0..=written.len().min(6)).find_map(|cut| {
        let end = written.len() - cut;
        let prefix = written.get(..end)?;
        serde_json::from_str::<String>(&format!("\"{prefix}\"")).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "run_select".into(),
            description: "Runs a SELECT.".into(),
            parameters: json!({"type": "object", "properties": {"sql": {"type": "string"}}}),
        }]
    }

    #[test]
    fn a_new_question_allows_only_a_tool_call_until_a_result_came_back() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "run_select".into(),
            arguments: "{}".into(),
        };
        let asked = vec![
            Message::system("You help."),
            Message::user("Which incidents are open?"),
        ];
        let schema = reply_schema(&tools(), must_look_first(&asked));
        let branches = schema["anyOf"].as_array().expect("one branch per tool");
        assert_eq!(branches.len(), 1);
        assert_eq!(
            branches[0]["properties"]["tool"]["enum"],
            json!(["run_select"])
        );
        assert_eq!(
            branches[0]["properties"]["arguments"],
            json!({
                "type": "object",
                "properties": {"sql": {"type": "string", "maxLength": GRAMMAR_MAX_LENGTH}},
                "additionalProperties": false,
            })
        );
        let looked = [
            asked.clone(),
            vec![
                Message::assistant("", vec![call]),
                Message::tool_result("call_1", "[[3]]"),
            ],
        ]
        .concat();
        let schema = reply_schema(&tools(), must_look_first(&looked));
        assert_eq!(schema["anyOf"].as_array().map(Vec::len), Some(2));
        assert_eq!(schema["anyOf"][1]["required"], json!(["answer"]));
        let next_question = [looked, vec![Message::user("And closed ones?")]].concat();
        assert!(must_look_first(&next_question));
        let activate = ToolCall {
            id: "call_2".into(),
            name: "host__activate".into(),
            arguments: r#"{"group": "sql"}"#.into(),
        };
        let only_activated = [
            next_question,
            vec![
                Message::assistant("", vec![activate]),
                Message::tool_result("call_2", "The group sql is active."),
            ],
        ]
        .concat();
        assert!(
            must_look_first(&only_activated),
            "the host's own tools give no data to answer from"
        );
    }

    #[test]
    fn argument_grammars_resolve_references_close_objects_and_bound_lengths() {
        let schema = json!({
            "type": "object",
            "$defs": {"Action": {"type": "string", "enum": ["acknowledge", "resolve"]}},
            "properties": {
                "incident": {"type": "string", "pattern": "^INC-[0-9]+$", "description": "INC-4"},
                "action": {"$ref": "#/$defs/Action"},
                "loop": {"$ref": "#/properties/loop"},
                "limit": {"type": ["integer", "null"], "minimum": 1, "format": "uint32"},
                "ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "note": {"type": "string", "minLength": 1, "maxLength": 10000},
            },
            "required": ["incident"],
        });
        assert_eq!(
            grammar_safe(&schema),
            json!({
                "type": "object",
                "properties": {
                    "incident": {"type": "string", "maxLength": GRAMMAR_MAX_LENGTH},
                    "action": {"type": "string", "enum": ["acknowledge", "resolve"]},
                    "loop": {},
                    "limit": {"type": ["integer", "null"], "minimum": 1},
                    "ids": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": GRAMMAR_MAX_LENGTH},
                        "maxItems": GRAMMAR_MAX_ITEMS,
                    },
                    "note": {"type": "string", "minLength": 1, "maxLength": GRAMMAR_MAX_LENGTH},
                },
                "additionalProperties": false,
                "required": ["incident"],
            })
        );
    }

    /// Every argument object the grammar of each of internal-mcp's real tools allows (as the host
    /// offers them) passes the host's check against the tool's full schema, so a weak model's call
    /// always reaches the server. Instances are drawn at random from the grammar.
    #[test]
    fn whatever_the_grammar_allows_passes_the_hosts_check_of_every_real_tool() {
        use crate::agent::policy::ToolPolicies;
        use crate::agent::tools::ToolSet;
        use internal_mcp::config::Endpoint;
        use internal_mcp::server::InternalMcpServer;

        let described: Vec<_> = InternalMcpServer::tools_for(Endpoint::All)
            .list_all()
            .iter()
            .map(crate::mcp::describe)
            .collect();
        assert!(
            described.len() >= 16,
            "internal-mcp's tools: {}",
            described.len()
        );
        let mut set = ToolSet::new(true);
        set.add_server(
            "internal-mcp",
            &described,
            &ToolPolicies::from_annotations(),
        );
        let mut specs = set.all_specs();
        specs.push(crate::agent::tools::read_result_spec());
        let mut random = Lcg(7);
        for spec in &specs {
            let grammar = grammar_safe(&spec.parameters);
            assert!(
                !grammar.to_string().contains("$ref"),
                "{}: {grammar}",
                spec.name
            );
            for _ in 0..200 {
                let arguments = instance(&grammar, &mut random, 0);
                let errors = crate::agent::schema::validate(&spec.parameters, &arguments);
                assert!(
                    errors.is_empty(),
                    "{}: the grammar allows {arguments}, which the host refuses: {errors:?}",
                    spec.name
                );
            }
        }
    }

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound.max(1)
        }
    }

    /// One value the grammar `schema` allows, picked at random (bounds included).
    fn instance(schema: &Value, random: &mut Lcg, depth: usize) -> Value {
        assert!(depth < 32, "the grammar nests too deeply: {schema}");
        if let Some(Value::Array(values)) = schema.get("enum") {
            return values[random.below(values.len() as u64) as usize].clone();
        }
        if let Some(value) = schema.get("const") {
            return value.clone();
        }
        if let Some(Value::Array(branches)) = schema.get("anyOf") {
            let branch = &branches[random.below(branches.len() as u64) as usize];
            return instance(branch, random, depth + 1);
        }
        let kind = match schema.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(Value::Array(kinds)) => kinds[random.below(kinds.len() as u64) as usize]
                .as_str()
                .unwrap_or("null")
                .to_owned(),
            _ => return json!(random.below(100)),
        };
        let number = |key: &str| schema.get(key).and_then(Value::as_f64);
        match kind.as_str() {
            "object" => {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|names| names.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut object = serde_json::Map::new();
                if let Some(Value::Object(properties)) = schema.get("properties") {
                    for (name, property) in properties {
                        if required.contains(&name.as_str()) || random.below(2) == 0 {
                            object.insert(name.clone(), instance(property, random, depth + 1));
                        }
                    }
                }
                Value::Object(object)
            }
            "array" => {
                let least = number("minItems").unwrap_or(0.0) as u64;
                let most = number("maxItems").unwrap_or(f64::MAX) as u64;
                let count = least + random.below(most - least + 1);
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                (0..count)
                    .map(|_| instance(&items, random, depth + 1))
                    .collect()
            }
            "string" => {
                let least = number("minLength").unwrap_or(0.0) as u64;
                let most = number("maxLength").unwrap_or(f64::MAX) as u64;
                let length =
                    [least, most, least + random.below(most - least + 1)][random.below(3) as usize];
                Value::String("é".repeat(length as usize))
            }
            "integer" | "number" => {
                let least = number("minimum")
                    .or(number("exclusiveMinimum").map(|bound| bound + 1.0))
                    .unwrap_or(-1e6);
                let most = number("maximum")
                    .or(number("exclusiveMaximum").map(|bound| bound - 1.0))
                    .unwrap_or(1e6);
                let span = (most - least).max(0.0) as u64;
                json!(least as i64 + random.below(span + 1) as i64)
            }
            "boolean" => json!(random.below(2) == 0),
            _ => Value::Null,
        }
    }

    #[test]
    fn json_schema_replies_become_calls_or_text() {
        let call = match parse_json_schema_reply(
            r#" {"tool": "run_select", "arguments": {"sql": "SELECT 1"}} "#,
        ) {
            JsonSchemaReply::ToolCall(call) => call,
            other => panic!("not a call: {other:?}"),
        };
        assert_eq!(call.name, "run_select");
        assert_eq!(call.arguments, r#"{"sql":"SELECT 1"}"#);
        assert!(call.id.starts_with("call_"));
        let check = |text: &str, expected: &str| {
            assert_eq!(
                parse_json_schema_reply(text),
                JsonSchemaReply::Answer(expected.to_owned())
            );
        };
        check(r#"{"answer": "Hello"}"#, "Hello");
        check("```json\n{\"answer\": \"fenced\"}\n```", "fenced");
        check("plain words", "plain words");
        check(r#"{"other": 1}"#, r#"{"other": 1}"#);
        // Cut by the token limit: an answer as far as it was written, a call not at all.
        check(r#"{"answer": "cut"#, "cut");
        check(r#"{"answer": "line\nnext\u00e"#, "line\nnext");
        check(r#"{ "answer" : "whole" "#, "whole");
        check(r#"{"answer": "two", "x"#, "two");
        for cut in [
            r#"{"tool": "run_sel"#,
            r#"{"tool": "run_select", "arguments": {"sql": "SELECT"#,
        ] {
            assert_eq!(
                parse_json_schema_reply(cut),
                JsonSchemaReply::CutCall,
                "{cut}"
            );
        }
    }

    #[test]
    fn a_json_schema_call_cut_at_the_token_limit_fails_the_model_call() {
        let mut decoder = ChatDecoder::new(true);
        let mut output = VecDeque::new();
        for chunk in [
            json!({"choices": [{"index": 0, "delta": {"content": "{\"tool\": \"run_select\", \"argu"}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        ] {
            let event = SseEvent {
                event: "message".into(),
                data: chunk.to_string(),
            };
            assert!(!decoder.on_event(event, &mut output).unwrap());
        }
        let done = SseEvent {
            event: "message".into(),
            data: "[DONE]".into(),
        };
        let error = decoder.on_event(done, &mut output).expect_err("a cut call");
        assert!(
            error.to_string().contains("limit of output tokens"),
            "{error}"
        );
        assert!(
            !output
                .iter()
                .any(|event| matches!(event, StreamEvent::TextDelta(_))),
            "no JSON for the person to read: {output:?}"
        );
    }

    #[test]
    fn json_schema_history_uses_only_system_user_and_assistant() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "run_select".into(),
            arguments: r#"{"sql":"SELECT 1"}"#.into(),
        };
        let messages = json_schema_messages(
            &[
                Message::system("You help."),
                Message::user("Count."),
                Message::assistant("", vec![call]),
                Message::tool_result("call_1", "1 row"),
                Message::user("And?"),
                Message::system("Be brief."),
            ],
            &tools(),
        );
        let roles: Vec<&str> = messages
            .iter()
            .map(|message| message["role"].as_str().expect("a role"))
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let system = messages[0]["content"].as_str().expect("text");
        assert!(system.starts_with("You help."), "{system}");
        assert!(system.contains("run_select"), "{system}");
        assert!(system.contains("Be brief."), "{system}");
        let written: Value =
            serde_json::from_str(messages[2]["content"].as_str().expect("text")).expect("JSON");
        assert_eq!(
            written,
            json!({"tool": "run_select", "arguments": {"sql": "SELECT 1"}})
        );
        assert_eq!(
            messages[3]["content"],
            "The result of run_select:\n1 row\n\nAnd?"
        );
    }

    /// Feeds `chunks` (the JSON of each `data:` line) to a native decoder.
    fn decode(chunks: &[Value]) -> Vec<StreamEvent> {
        let mut decoder = ChatDecoder::new(false);
        let mut output = VecDeque::new();
        for chunk in chunks {
            let event = SseEvent {
                event: "message".into(),
                data: chunk.to_string(),
            };
            assert!(!decoder.on_event(event, &mut output).expect("reads"));
        }
        decoder.on_end(&mut output).expect("ends");
        output.into()
    }

    fn call(id: &str, name: &str, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCall(ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn calls_without_an_index_are_told_apart_by_their_ids() {
        let delta =
            |calls: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]});
        let events = decode(&[
            delta(json!([{"id": "a", "function": {"name": "one", "arguments": "{\"x\""}}])),
            delta(json!([{"function": {"arguments": ":1}"}}])),
            delta(json!([{"id": "b", "function": {"name": "two", "arguments": "{}"}}])),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ]);
        assert_eq!(
            events,
            [
                call("a", "one", r#"{"x":1}"#),
                call("b", "two", "{}"),
                StreamEvent::Finished(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn whole_calls_with_object_arguments_and_repeated_names_are_read() {
        // Ollama sends a call whole, its arguments as an object; some servers repeat the name.
        let events = decode(&[
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "", "function": {"name": "one", "arguments": {"x": 1}}}
            ]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": null, "function": {"name": "two"}}
            ]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"name": "two", "arguments": "{}"}}
            ]}}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ]);
        let [
            StreamEvent::ToolCall(first),
            StreamEvent::ToolCall(second),
            usage,
            finish,
        ] = events.as_slice()
        else {
            panic!("two calls, usage and finish: {events:?}");
        };
        assert!(first.id.starts_with("call_") && second.id.starts_with("call_"));
        assert_ne!(first.id, second.id);
        assert_eq!(
            (first.name.as_str(), first.arguments.as_str()),
            ("one", r#"{"x":1}"#)
        );
        assert_eq!(
            (second.name.as_str(), second.arguments.as_str()),
            ("two", "{}")
        );
        assert_eq!(
            usage,
            &StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 2
            })
        );
        assert_eq!(finish, &StreamEvent::Finished(FinishReason::ToolCalls));
    }

    #[test]
    fn endless_arguments_are_refused() {
        let mut decoder = ChatDecoder::new(false);
        let mut output = VecDeque::new();
        let piece = "x".repeat(64 * 1024);
        let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "one", "arguments": piece}}
        ]}}]})
        .to_string();
        let mut result = Ok(false);
        for _ in 0..100 {
            let event = SseEvent {
                event: "message".into(),
                data: chunk.clone(),
            };
            result = decoder.on_event(event, &mut output);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(&result, Err(LlmError::Protocol(message)) if message.contains("bytes")),
            "{result:?}"
        );
    }

    #[test]
    fn openai_itself_gets_max_completion_tokens() {
        let body = |base_url: &str| {
            let model = ModelInfo {
                provider: String::new(),
                name: "m".into(),
                context_window: 8_192,
                local: false,
            };
            let provider =
                OpenAiCompatible::new(base_url, model, None, ToolMode::Native, Timeouts::DEFAULT)
                    .expect("a provider");
            provider.request_body(&Request {
                messages: vec![Message::user("x")],
                tools: Vec::new(),
                max_output_tokens: 99,
            })
        };
        let openai = body("https://api.openai.com/v1");
        assert_eq!(openai["max_completion_tokens"], 99);
        assert!(openai.get("max_tokens").is_none());
        let local = body("http://127.0.0.1:8080/v1");
        assert_eq!(local["max_tokens"], 99);
        assert!(local.get("max_completion_tokens").is_none());
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(finish_reason(Some("stop"), false), FinishReason::Stop);
        assert_eq!(finish_reason(Some("stop"), true), FinishReason::ToolCalls);
        assert_eq!(
            finish_reason(Some("tool_calls"), true),
            FinishReason::ToolCalls
        );
        assert_eq!(finish_reason(Some("length"), true), FinishReason::Length);
        assert_eq!(
            finish_reason(Some("content_filter"), false),
            FinishReason::Other
        );
    }
}
