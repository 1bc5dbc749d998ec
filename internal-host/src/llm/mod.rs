//! Language-model providers behind one streaming interface: the loop speaks [`Provider`], and each
//! implementation translates to one wire format (OpenAI-compatible Chat Completions, Anthropic
//! Messages). A provider streams text deltas as they arrive and hands over each tool call only once
//! it is complete, with its arguments as the model wrote them (the loop checks them against the
//! tool's schema, so malformed JSON is the loop's to report back to the model, not the provider's).

pub mod anthropic;
mod http;
pub mod openai;
pub mod settings;
mod sse;

use std::fmt;
use std::pin::Pin;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use anthropic::Anthropic;
pub use http::{ApiKey, Timeouts};
pub use openai::{OpenAiCompatible, ToolMode};
pub use settings::{LlmSettings, ProviderKind};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering the assistant's call with the same id.
    Tool,
}

/// One message of the conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`]: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, or one the provider made up when the server sent none
    /// (some local servers answer 500 to a null id on the next request).
    pub id: String,
    pub name: String,
    /// The arguments exactly as the model wrote them: usually a JSON object, possibly not.
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments object.
    pub parameters: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct Request {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// The most tokens the reply may have.
    pub max_output_tokens: u32,
}

/// What a provider streams back, in order: any number of text deltas and complete tool calls,
/// usage when the server reports it, then exactly one [`StreamEvent::Finished`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    TextDelta(String),
    ToolCall(ToolCall),
    Usage(Usage),
    Finished(FinishReason),
}

/// Tokens a call used, as the server counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The answer is complete.
    Stop,
    /// The model wants its tool calls run.
    ToolCalls,
    /// The reply hit `max_output_tokens`.
    Length,
    /// The server filtered the reply, or gave a reason this client does not know.
    Other,
}

/// What went wrong talking to the model. Messages never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The server could not be reached, or the connection broke mid-stream.
    #[error("the model server could not be reached: {0}")]
    Unreachable(String),
    /// The server answered with an error status (its message, cut short).
    #[error("the model server answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The server sent something this client cannot read.
    #[error("the model server sent a reply that could not be read: {0}")]
    Protocol(String),
    /// No byte arrived for longer than the provider's idle timeout.
    #[error("the model server sent nothing for {0} s")]
    Idle(u64),
}

/// The stream of one model call. Dropping it stops the call (the HTTP request is dropped).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

/// A model behind some wire format.
pub trait Provider: Send + Sync + fmt::Debug {
    /// Which model answers, as the page shows it.
    fn model(&self) -> &ModelInfo;

    /// Starts one model call. Errors arrive as stream items; after an error the stream ends.
    fn stream(&self, request: Request) -> EventStream;
}

/// What the page and the loop need to know about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The provider's kind, e.g. `openai-compatible` or `anthropic`.
    pub provider: String,
    /// The model's name, as the server knows it.
    pub name: String,
    /// The context window in tokens, which the loop keeps the conversation within.
    pub context_window: u32,
    /// A small local model: the page says its answers are weak.
    pub local: bool,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::text(Role::Assistant, content)
        }
    }

    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::text(Role::Tool, content)
        }
    }

    fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}
