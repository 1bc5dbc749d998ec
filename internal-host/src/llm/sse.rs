//! An incremental Server-Sent-Events parser: bytes go in as the network hands them over (split
//! anywhere, even inside a UTF-8 character or between CR and LF), complete events come out. It
//! follows the WHATWG event-stream rules that model servers rely on (`data:` lines joined by
//! newlines, `event:`, comments, CR, LF and CRLF line ends) and refuses an event larger than a cap,
//! so a broken server cannot make the host buffer without bound.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::LlmError;

/// The largest event the providers accept: far above any delta a model server sends.
pub(crate) const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, or `message` when the server named none.
    pub(crate) event: String,
    /// The `data:` lines joined by `\n`.
    pub(crate) data: String,
}

/// Turns chunks of bytes into events.
#[derive(Debug)]
pub(crate) struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last chunk ended in CR: a LF at the start of the next one ends no second line.
    after_carriage_return: bool,
    /// Still at the stream's start, where one byte-order mark is skipped.
    at_start: bool,
    event: String,
    data: String,
    /// Bytes the current event holds so far (its fields and its unfinished line).
    event_bytes: usize,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_carriage_return: false,
            at_start: true,
            event: String::new(),
            data: String::new(),
            event_bytes: 0,
            ready: VecDeque::new(),
        }
    }

    /// Reads one chunk; the events it completed wait in [`SseParser::next_event`].
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Result<(), LlmError> {
        if self.at_start && !chunk.is_empty() {
            const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";
            let seen = self.line.len() + chunk.len();
            if seen < BYTE_ORDER_MARK.len() {
                let mut start = std::mem::take(&mut self.line);
                start.extend_from_slice(chunk);
                if BYTE_ORDER_MARK.starts_with(&start) {
                    self.line = start;
                    return Ok(());
                }
                self.at_start = false;
                return self.push(&start);
            }
            self.at_start = false;
            if !self.line.is_empty() {
                // The first bytes were held back while they could still be a byte-order mark.
                let mut start = std::mem::take(&mut self.line);
                start.extend_from_slice(chunk);
                let rest = start.strip_prefix(BYTE_ORDER_MARK).unwrap_or(&start);
                return self.push_lines(rest);
            }
            chunk = chunk.strip_prefix(BYTE_ORDER_MARK).unwrap_or(chunk);
        }
        self.push_lines(chunk)
    }

    /// The next complete event, if any.
    pub(crate) fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    fn push_lines(&mut self, mut chunk: &[u8]) -> Result<(), LlmError> {
        if self.after_carriage_return && !chunk.is_empty() {
            self.after_carriage_return = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        while let Some(end) = chunk
            .iter()
            .position(|byte| *byte == b'\n' || *byte == b'\r')
        {
            self.line.extend_from_slice(&chunk[..end]);
            self.check_size(0)?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
            let ended_by_carriage_return = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if ended_by_carriage_return {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_carriage_return = true,
                }
            }
        }
        self.line.extend_from_slice(chunk);
        self.check_size(0)
    }

    fn check_size(&self, extra: usize) -> Result<(), LlmError> {
        if self.event_bytes + self.line.len() + extra > self.max_event_bytes {
            return Err(LlmError::Protocol(format!(
                "an event of more than {} bytes",
                self.max_event_bytes
            )));
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        // A line is complete, so no UTF-8 character is cut; invalid bytes become U+FFFD, as the
        // event-stream rules say.
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.event_bytes += value.len() + 1;
            }
            "event" => {
                self.event_bytes += value.len();
                self.event = value.to_owned();
            }
            // `id` and `retry` matter to reconnecting browsers, not to one model call.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        self.event_bytes = 0;
        if data.is_empty() {
            return;
        }
        data.pop();
        self.ready.push_back(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        });
    }
}

/// The events of a response body. Each wait for bytes is bounded by `idle_timeout`; a broken
/// connection is [`LlmError::Unreachable`]; the stream ends when the body does (an unfinished last
/// event is dropped, as the rules say).
pub(crate) fn events<S, B, E>(
    body: S,
    idle_timeout: Duration,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<SseEvent, LlmError>> + Send
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: AsRef<[u8]>,
    E: std::error::Error,
{
    let state = Some((body, SseParser::new(max_event_bytes)));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut body, mut parser) = state?;
        loop {
            if let Some(event) = parser.next_event() {
                return Some((Ok(event), Some((body, parser))));
            }
            let chunk = match tokio::time::timeout(idle_timeout, body.next()).await {
                Err(_) => return Some((Err(LlmError::Idle(idle_timeout.as_secs())), None)),
                Ok(None) => return None,
                Ok(Some(Err(error))) => {
                    return Some((Err(LlmError::Unreachable(error_chain(&error))), None));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if let Err(error) = parser.push(chunk.as_ref()) {
                return Some((Err(error), None));
            }
        }
    })
}

/// An error and its sources in one line (reqwest's own message says little: the cause is below).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, LlmError> {
        let mut parser = SseParser::new(64);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk)?;
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Parses `input` whole and split at every byte position (in two), and checks all agree.
    fn check(input: &str, expected: &[SseEvent]) {
        let bytes = input.as_bytes();
        assert_eq!(
            parse_chunks(&[bytes]).expect("parses"),
            expected,
            "{input:?}"
        );
        for split in 0..=bytes.len() {
            let (first, second) = bytes.split_at(split);
            assert_eq!(
                parse_chunks(&[first, second]).expect("parses"),
                expected,
                "{input:?} split at {split}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            parse_chunks(&single_bytes).expect("parses"),
            expected,
            "{input:?} byte by byte"
        );
    }

    #[test]
    fn one_data_line() {
        check("data: hello\n\n", &[event("message", "hello")]);
    }

    #[test]
    fn data_lines_are_joined_by_newlines() {
        check(
            "data: one\ndata:two\ndata:  three\n\n",
            &[event("message", "one\ntwo\n three")],
        );
    }

    #[test]
    fn event_names_are_kept_and_reset() {
        check(
            "event: ping\ndata: {}\n\ndata: x\n\n",
            &[event("ping", "{}"), event("message", "x")],
        );
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        check(
            ": keep-alive\nid: 7\nretry: 10\ndata: x\n: inside\n\n: trailing\n\n",
            &[event("message", "x")],
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        check("event: ping\n\n\n\ndata\n\n", &[event("message", "")]);
    }

    #[test]
    fn crlf_cr_and_lf_all_end_lines() {
        check(
            "data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\ndata: e\r\n\r\n",
            &[
                event("message", "a"),
                event("message", "b"),
                event("message", "c"),
                event("message", "d\ne"),
            ],
        );
    }

    #[test]
    fn utf8_split_inside_a_character_survives() {
        check(
            "data: grüße 🚀 日本\n\n",
            &[event("message", "grüße 🚀 日本")],
        );
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped() {
        check("\u{FEFF}data: x\n\n", &[event("message", "x")]);
    }

    #[test]
    fn an_unfinished_last_event_is_dropped() {
        check("data: x\n\ndata: cut", &[event("message", "x")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let events = parse_chunks(&[b"data: a\xFFb\n\n"]).expect("parses");
        assert_eq!(events, [event("message", "a\u{FFFD}b")]);
    }

    #[test]
    fn an_oversized_event_is_refused() {
        let long_line = format!("data: {}\n\n", "x".repeat(100));
        let error = parse_chunks(&[long_line.as_bytes()]).expect_err("too large");
        assert_eq!(
            error,
            LlmError::Protocol("an event of more than 64 bytes".into())
        );
        // Also when it is built of many small lines, and when no line end ever comes.
        let many_lines = "data: 0123456789\n".repeat(10);
        assert!(parse_chunks(&[many_lines.as_bytes()]).is_err());
        let endless: Vec<&[u8]> = std::iter::repeat_n(b"xxxxxxxx".as_slice(), 10).collect();
        assert!(parse_chunks(&endless).is_err());
    }

    #[test]
    fn events_up_to_the_cap_pass_and_the_count_resets() {
        let line = format!("data: {}\n\n", "x".repeat(40));
        let input = line.repeat(5);
        let events = parse_chunks(&[input.as_bytes()]).expect("each event is small");
        assert_eq!(events.len(), 5);
    }
}
