//! Streamed text is gathered and stored in pieces (every ~100 ms or ~200 characters), so the event
//! log holds a few rows per answer instead of one per token, and readers still see it move.

use std::time::Duration;

use tokio::time::Instant;

/// Text waiting to be stored.
#[derive(Debug)]
pub(crate) struct Coalescer {
    pending: String,
    since: Option<Instant>,
    interval: Duration,
    chars: usize,
}

impl Coalescer {
    pub fn new(interval: Duration, chars: usize) -> Self {
        Self {
            pending: String::new(),
            since: None,
            interval,
            chars,
        }
    }

    pub fn push(&mut self, delta: &str) {
        if self.pending.is_empty() {
            self.since = Some(Instant::now());
        }
        self.pending.push_str(delta);
    }

    /// Enough text waited long enough, or there is a lot of it.
    pub fn due(&self) -> bool {
        !self.pending.is_empty()
            && (self.pending.chars().count() >= self.chars
                || self
                    .since
                    .is_some_and(|since| since.elapsed() >= self.interval))
    }

    /// When the waiting text is due, if any waits.
    pub fn due_at(&self) -> Option<Instant> {
        self.since
            .filter(|_| !self.pending.is_empty())
            .map(|since| since + self.interval)
    }

    /// The waiting text, if any; the buffer is empty afterwards.
    pub fn take(&mut self) -> Option<String> {
        self.since = None;
        if self.pending.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_released_by_size_or_on_request() {
        let mut text = Coalescer::new(Duration::from_secs(60), 5);
        text.push("ab");
        assert!(!text.due());
        assert!(text.due_at().is_some());
        text.push("cde");
        assert!(text.due());
        assert_eq!(text.take().as_deref(), Some("abcde"));
        assert_eq!(text.take(), None);
        assert!(text.due_at().is_none());
    }
}
