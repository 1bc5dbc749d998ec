//! What both wire formats share: the HTTP client with its timeouts, the API key that never prints,
//! error statuses turned into short messages without secrets, and the driver that turns a streamed
//! response into [`StreamEvent`]s through a format's [`Decoder`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::sse::{self, SseEvent};
use super::{EventStream, LlmError, StreamEvent};

/// The most bytes of tool-call arguments (and of a JSON-schema reply) one reply may assemble.
pub(crate) const MAX_ASSEMBLED_BYTES: usize = 4 * 1024 * 1024;
/// The most tool calls one reply may make.
pub(crate) const MAX_TOOL_CALLS: usize = 128;

/// The most characters of a server's error message an error carries.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;
/// The most bytes of an error body read to find its message.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// A model server's API key: never printed, sent only in a header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

/// The timeouts of every model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Setting up the TCP (and TLS) connection.
    pub connect: Duration,
    /// The longest wait for the next byte, the response's headers included.
    pub idle: Duration,
}

/// How one wire format reads its events.
pub(crate) trait Decoder: Send + 'static {
    /// Reads one event into `output`; returns true once the reply is complete.
    fn on_event(
        &mut self,
        event: SseEvent,
        output: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, LlmError>;

    /// The body ended before the decoder said the reply was complete: finish it, or say why not.
    fn on_end(&mut self, output: &mut VecDeque<StreamEvent>) -> Result<(), LlmError>;
}

impl ApiKey {
    /// Refuses an empty key and one that cannot be a header value.
    pub fn new(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into();
        let key = key.trim();
        if key.is_empty() {
            return Err("the API key is empty".to_owned());
        }
        if key.chars().any(|character| character.is_control()) {
            return Err("the API key contains control characters".to_owned());
        }
        if !key.is_ascii() {
            return Err("the API key contains characters that are not ASCII".to_owned());
        }
        Ok(Self(key.into()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ApiKey(..)")
    }
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };
}

/// A client for one provider. Redirects are not followed: the key must not travel elsewhere.
pub(crate) fn client(timeouts: Timeouts) -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| LlmError::Unreachable(sse::error_chain(&error.without_url())))
}

/// Sends `request` and streams its reply through `decoder`. Nothing is sent until the stream is
/// first polled; dropping the stream drops the request and its connection.
pub(crate) fn stream_reply<D: Decoder>(
    request: reqwest::RequestBuilder,
    timeouts: Timeouts,
    secret: Option<ApiKey>,
    decoder: D,
) -> EventStream {
    let idle = timeouts.idle;
    let secret_for_errors = secret.clone();
    let reply = async move {
        let response = match tokio::time::timeout(idle, request.send()).await {
            Err(_) => return Err(LlmError::Idle(idle.as_secs())),
            Ok(Err(error)) => {
                return Err(LlmError::Unreachable(sse::error_chain(
                    &error.without_url(),
                )));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let message = error_message(response, idle, secret.as_ref()).await;
            return Err(LlmError::Status {
                status: status.as_u16(),
                message,
            });
        }
        let events: Events = Box::pin(sse::events(
            Box::pin(response.bytes_stream()),
            idle,
            sse::MAX_EVENT_BYTES,
        ));
        Ok(events)
    };
    let state = State::Starting {
        reply: Box::pin(reply),
        decoder,
    };
    let stream = futures_util::stream::unfold(state, next_event);
    match secret_for_errors {
        None => Box::pin(stream),
        // Whatever a server says mid-stream, it does not get to print the key either.
        Some(key) => Box::pin(stream.map(move |item| item.map_err(|error| redact(error, &key)))),
    }
}

fn redact(error: LlmError, key: &ApiKey) -> LlmError {
    let clean = |text: String| text.replace(key.expose(), "[redacted]");
    match error {
        LlmError::Unreachable(message) => LlmError::Unreachable(clean(message)),
        LlmError::Status { status, message } => LlmError::Status {
            status,
            message: clean(message),
        },
        LlmError::Protocol(message) => LlmError::Protocol(clean(message)),
        LlmError::Idle(seconds) => LlmError::Idle(seconds),
    }
}

type Events =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<SseEvent, LlmError>> + Send>>;
type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Events, LlmError>> + Send>>;

enum State<D> {
    Starting {
        reply: Reply,
        decoder: D,
    },
    Streaming {
        events: Events,
        decoder: D,
        output: VecDeque<StreamEvent>,
        complete: bool,
    },
    /// What is left to hand over after the reply ended (or failed).
    Draining {
        output: VecDeque<StreamEvent>,
        error: Option<LlmError>,
    },
}

async fn next_event<D: Decoder>(
    mut state: State<D>,
) -> Option<(Result<StreamEvent, LlmError>, State<D>)> {
    loop {
        state = match state {
            State::Starting { reply, decoder } => match reply.await {
                Err(error) => State::Draining {
                    output: VecDeque::new(),
                    error: Some(error),
                },
                Ok(events) => State::Streaming {
                    events,
                    decoder,
                    output: VecDeque::new(),
                    complete: false,
                },
            },
            State::Streaming {
                mut events,
                mut decoder,
                mut output,
                complete,
            } => {
                if let Some(event) = output.pop_front() {
                    return Some((
                        Ok(event),
                        State::Streaming {
                            events,
                            decoder,
                            output,
                            complete,
                        },
                    ));
                }
                if complete {
                    return None;
                }
                match events.next().await {
                    None => {
                        let error = decoder.on_end(&mut output).err();
                        State::Draining { output, error }
                    }
                    Some(Err(error)) => State::Draining {
                        output,
                        error: Some(error),
                    },
                    Some(Ok(event)) => match decoder.on_event(event, &mut output) {
                        Err(error) => State::Draining {
                            output,
                            error: Some(error),
                        },
                        Ok(complete) => State::Streaming {
                            events,
                            decoder,
                            output,
                            complete,
                        },
                    },
                }
            }
            State::Draining {
                mut output,
                mut error,
            } => {
                if let Some(event) = output.pop_front() {
                    return Some((Ok(event), State::Draining { output, error }));
                }
                let error = error.take()?;
                return Some((
                    Err(error),
                    State::Draining {
                        output,
                        error: None,
                    },
                ));
            }
        };
    }
}

/// The server's own message from an error body (`error.message`, `message`, or the text), cut
/// short, with the key blanked out in case the server quotes it.
async fn error_message(
    mut response: reqwest::Response,
    idle: Duration,
    secret: Option<&ApiKey>,
) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let message = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(json) => message_of(&json).unwrap_or_else(|| text.trim().to_owned()),
        Err(_) => text.trim().to_owned(),
    };
    let message = match secret {
        Some(key) => message.replace(key.expose(), "[redacted]"),
        None => message,
    };
    let message = if message.is_empty() {
        "no message".to_owned()
    } else {
        message
    };
    cut(&message, MAX_ERROR_MESSAGE_CHARS)
}

/// `error.message`, `error` as a string, or `message`: what the common servers put there.
pub(crate) fn message_of(json: &serde_json::Value) -> Option<String> {
    let error = json.get("error");
    let message = error
        .and_then(|error| error.get("message"))
        .or_else(|| error.filter(|error| error.is_string()))
        .or_else(|| json.get("message"))
        .or_else(|| json.get("detail"))?;
    match message {
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Refuses a reply that assembles more than the caps allow, so a broken server cannot make the
/// host buffer without bound.
pub(crate) fn check_assembled(calls: usize, bytes: usize) -> Result<(), LlmError> {
    if calls > MAX_TOOL_CALLS {
        return Err(LlmError::Protocol(format!(
            "more than {MAX_TOOL_CALLS} tool calls in one reply"
        )));
    }
    if bytes > MAX_ASSEMBLED_BYTES {
        return Err(LlmError::Protocol(format!(
            "tool calls of more than {MAX_ASSEMBLED_BYTES} bytes in one reply"
        )));
    }
    Ok(())
}

/// A made-up tool-call id, for servers that send none: unique, so that tool results still find
/// their call in a long conversation.
pub(crate) fn made_up_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// `{base_url}/{path}` without a doubled slash.
pub(crate) fn endpoint(base_url: &str, path: &str) -> String {
    format!("{}/{}", base_url.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("sk-very-secret").expect("a key");
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
        assert!(ApiKey::new("  ").is_err());
        assert!(ApiKey::new("a\nb").is_err());
        assert_eq!(ApiKey::new(" k \n").expect("trimmed").expose(), "k");
    }

    #[test]
    fn messages_are_found_and_cut() {
        let check = |json: serde_json::Value, expected: Option<&str>| {
            assert_eq!(message_of(&json).as_deref(), expected, "{json}");
        };
        check(
            serde_json::json!({"error": {"message": "bad"}}),
            Some("bad"),
        );
        check(serde_json::json!({"error": "worse"}), Some("worse"));
        check(serde_json::json!({"message": "plain"}), Some("plain"));
        check(serde_json::json!({"other": 1}), None);
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("äöü", 3), "äöü");
    }

    #[test]
    fn endpoints_join_cleanly() {
        assert_eq!(
            endpoint("http://h/v1/", "chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert!(made_up_call_id().starts_with("call_"));
    }
}
