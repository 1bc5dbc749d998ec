//! The guards of one turn, declared in one place: caps on model calls, tool calls, wall time and
//! tokens, the repeated-call breaker, the result cap, and how often streamed text is stored.
//! [`Budget`] counts what a turn has used and says which cap it reached.

use std::time::{Duration, Instant};

use crate::error::Error;

/// Limits on one turn (and on each continuation after an approval). Validated by [`Self::validate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnLimits {
    /// Model calls per turn.
    pub max_model_calls: u32,
    /// Tool calls per turn (refused ones count too: a model that keeps sending bad calls stops).
    pub max_tool_calls: u32,
    /// Wall time per turn, model and tools together.
    pub max_wall_time: Duration,
    /// Input plus output tokens per turn, as the server reports them (estimated when it does not).
    pub max_tokens: u64,
    /// How many times the same tool with the same arguments may run in a turn; the next identical
    /// call is refused and the model is told why, and one more after that ends the turn.
    pub max_identical_calls: u32,
    /// The most characters of one tool result that enter the model's context; the rest is kept
    /// and the model may page through it with `host__read_result`.
    pub max_result_chars: usize,
    /// The most tokens one model reply may have.
    pub max_output_tokens: u32,
    /// Streamed text is stored as one `Text` event at least this often...
    pub text_flush_interval: Duration,
    /// ...or once this many characters are waiting, whichever comes first.
    pub text_flush_chars: usize,
    /// How long a plan waits for the user when the server does not say (tools without two steps).
    pub approval_lifetime: Duration,
}

/// What a turn has used so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub started: Instant,
    pub model_calls: u32,
    pub tool_calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A cap a turn reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    ModelCalls,
    ToolCalls,
    WallTime,
    Tokens,
}

impl TurnLimits {
    pub const DEFAULT: TurnLimits = TurnLimits {
        max_model_calls: 10,
        max_tool_calls: 20,
        max_wall_time: Duration::from_secs(180),
        max_tokens: 200_000,
        max_identical_calls: 2,
        max_result_chars: 8_000,
        max_output_tokens: 2_048,
        text_flush_interval: Duration::from_millis(100),
        text_flush_chars: 200,
        approval_lifetime: Duration::from_secs(300),
    };

    /// Refuses limits that would make a turn useless or unbounded.
    pub fn validate(&self) -> Result<(), Error> {
        let refuse = |message: &str| Err(Error::Startup(format!("turn limits: {message}")));
        if !(1..=100).contains(&self.max_model_calls) {
            return refuse("max_model_calls must be between 1 and 100");
        }
        if !(1..=500).contains(&self.max_tool_calls) {
            return refuse("max_tool_calls must be between 1 and 500");
        }
        if self.max_wall_time < Duration::from_secs(1)
            || self.max_wall_time > Duration::from_secs(3_600)
        {
            return refuse("max_wall_time must be between 1 s and 1 hour");
        }
        if !(1_000..=10_000_000).contains(&self.max_tokens) {
            return refuse("max_tokens must be between 1,000 and 10,000,000");
        }
        if !(1..=10).contains(&self.max_identical_calls) {
            return refuse("max_identical_calls must be between 1 and 10");
        }
        if !(500..=1_000_000).contains(&self.max_result_chars) {
            return refuse("max_result_chars must be between 500 and 1,000,000");
        }
        if !(16..=200_000).contains(&self.max_output_tokens) {
            return refuse("max_output_tokens must be between 16 and 200,000");
        }
        if self.text_flush_interval.is_zero() || self.text_flush_interval > Duration::from_secs(5) {
            return refuse("text_flush_interval must be between 1 ms and 5 s");
        }
        if !(1..=100_000).contains(&self.text_flush_chars) {
            return refuse("text_flush_chars must be between 1 and 100,000");
        }
        if self.approval_lifetime < Duration::from_secs(10)
            || self.approval_lifetime > Duration::from_secs(3_600)
        {
            return refuse("approval_lifetime must be between 10 s and 1 hour");
        }
        Ok(())
    }
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Budget {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            model_calls: 0,
            tool_calls: 0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// The first cap that stops another model call, if any.
    pub fn before_model_call(&self, limits: &TurnLimits) -> Option<Cap> {
        if self.model_calls >= limits.max_model_calls {
            return Some(Cap::ModelCalls);
        }
        self.time_or_tokens(limits)
    }

    /// The first cap that stops another tool call, if any.
    pub fn before_tool_call(&self, limits: &TurnLimits) -> Option<Cap> {
        if self.tool_calls >= limits.max_tool_calls {
            return Some(Cap::ToolCalls);
        }
        self.time_or_tokens(limits)
    }

    fn time_or_tokens(&self, limits: &TurnLimits) -> Option<Cap> {
        if self.started.elapsed() >= limits.max_wall_time {
            return Some(Cap::WallTime);
        }
        if self.tokens() >= limits.max_tokens {
            return Some(Cap::Tokens);
        }
        None
    }

    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn deadline(&self, limits: &TurnLimits) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + limits.max_wall_time)
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// What the user reads when `cap` ends the turn: which cap, and the counts.
    pub fn cap_notice(&self, cap: Cap, limits: &TurnLimits) -> String {
        let which = match cap {
            Cap::ModelCalls => format!("the cap of {} model calls", limits.max_model_calls),
            Cap::ToolCalls => format!("the cap of {} tool calls", limits.max_tool_calls),
            Cap::WallTime => format!("the time limit of {} s", limits.max_wall_time.as_secs_f64()),
            Cap::Tokens => format!("the cap of {} tokens", limits.max_tokens),
        };
        format!(
            "The turn stopped at {which}: {} model calls, {} tool calls, {} tokens ({} in, {} out), {:.1} s.",
            self.model_calls,
            self.tool_calls,
            self.tokens(),
            self.input_tokens,
            self.output_tokens,
            self.started.elapsed().as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused() {
        assert!(TurnLimits::DEFAULT.validate().is_ok());
        let check = |change: fn(&mut TurnLimits)| {
            let mut limits = TurnLimits::DEFAULT;
            change(&mut limits);
            limits.validate()
        };
        assert!(check(|l| l.max_model_calls = 0).is_err());
        assert!(check(|l| l.max_tool_calls = 0).is_err());
        assert!(check(|l| l.max_wall_time = Duration::ZERO).is_err());
        assert!(check(|l| l.max_tokens = 10).is_err());
        assert!(check(|l| l.max_identical_calls = 0).is_err());
        assert!(check(|l| l.max_result_chars = 10).is_err());
        assert!(check(|l| l.max_output_tokens = 0).is_err());
        assert!(check(|l| l.text_flush_interval = Duration::ZERO).is_err());
        assert!(check(|l| l.text_flush_chars = 0).is_err());
        assert!(check(|l| l.approval_lifetime = Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_first_cap_reached_is_named_with_the_counts() {
        let limits = TurnLimits {
            max_model_calls: 2,
            ..TurnLimits::DEFAULT
        };
        let mut budget = Budget::new();
        assert_eq!(budget.before_model_call(&limits), None);
        budget.model_calls = 2;
        budget.tool_calls = 3;
        assert_eq!(budget.before_model_call(&limits), Some(Cap::ModelCalls));
        assert_eq!(budget.before_tool_call(&limits), None);
        let notice = budget.cap_notice(Cap::ModelCalls, &limits);
        assert!(
            notice.contains("cap of 2 model calls: 2 model calls, 3 tool calls"),
            "{notice}"
        );
        budget.output_tokens = 250_000;
        assert_eq!(budget.before_tool_call(&limits), Some(Cap::Tokens));
    }
}
