//! What the model sees of a conversation: rebuilt from the event log (the only record of what was
//! said), and kept within the model's context window. When it does not fit, the oldest turns' tool
//! results go first, then the oldest turns, then the current turn's older results are shortened;
//! the system prompt, the question and the latest exchange always stay. Tokens are estimated as
//! characters / 4.

use std::collections::HashMap;

use uuid::Uuid;

use super::prompts;
use super::tools::{self, ToolSet};
use crate::events::TurnEvent;
use crate::llm::{Message, Role, ToolCall, ToolSpec};

/// Characters per token, roughly, for English and JSON.
const CHARS_PER_TOKEN: usize = 4;
/// Tokens each message costs beyond its text (role, separators).
const MESSAGE_OVERHEAD_TOKENS: usize = 4;
/// What is left of a result dropped to fit the window.
const DROPPED_RESULT: &str = "[This earlier result was dropped to fit the context window.]";
/// The current turn's older results are shortened to this many characters when needed.
const SHORTENED_RESULT_CHARS: usize = 400;

/// A conversation as the model will see it.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub system: Message,
    /// Earlier turns, oldest first, each a run of messages starting with the user's question.
    pub earlier: Vec<Vec<Message>>,
    /// The turn being answered.
    pub current: Vec<Message>,
    /// Earlier turns dropped to fit the window.
    pub dropped_turns: usize,
}

impl Conversation {
    pub fn messages(&self) -> Vec<Message> {
        let mut messages = vec![self.system.clone()];
        if self.dropped_turns > 0 {
            messages.push(Message::user(format!(
                "[host] {} earlier turn(s) of this conversation were left out to fit the context window.",
                self.dropped_turns
            )));
        }
        messages.extend(self.earlier.iter().flatten().cloned());
        messages.extend(self.current.iter().cloned());
        messages
    }

    /// Makes the conversation and the tools `tools` offers fit in `budget_tokens`; returns the
    /// estimate after and the tools to send. A result the model will read that points to
    /// `host__read_result` (shortened here to fit, or cut in an earlier turn) gets the paging tool
    /// offered with it, so the model is never told of a tool it does not have.
    pub fn fit_with_tools(
        &mut self,
        budget_tokens: usize,
        tools: &mut ToolSet,
    ) -> (usize, Vec<ToolSpec>) {
        let specs = tools.specs();
        let estimate = self.fit(budget_tokens, &specs);
        if tools.offers_paging() || !self.points_to_paging() {
            return (estimate, specs);
        }
        tools.allow_paging();
        let specs = tools.specs();
        (self.fit(budget_tokens, &specs), specs)
    }

    /// True when a result the model will read tells it to call `host__read_result`.
    fn points_to_paging(&self) -> bool {
        let paging = tools::qualified_name(tools::HOST, tools::READ_RESULT);
        self.earlier
            .iter()
            .flatten()
            .chain(&self.current)
            .any(|message| message.role == Role::Tool && message.content.contains(&paging))
    }

    /// Makes the conversation and `tools` fit in `budget_tokens`; returns the estimate after.
    fn fit(&mut self, budget_tokens: usize, tools: &[ToolSpec]) -> usize {
        let tools_tokens = estimate_tools(tools);
        let total = |conversation: &Conversation| estimate(&conversation.messages()) + tools_tokens;
        // 1. The oldest turns' tool results.
        for turn in 0..self.earlier.len() {
            if total(self) <= budget_tokens {
                return total(self);
            }
            for message in &mut self.earlier[turn] {
                if message.role == Role::Tool && message.content != DROPPED_RESULT {
                    message.content = DROPPED_RESULT.to_owned();
                }
            }
        }
        // 2. The oldest turns.
        while total(self) > budget_tokens && !self.earlier.is_empty() {
            self.earlier.remove(0);
            self.dropped_turns += 1;
        }
        // 3. The current turn's results, oldest first, but never the latest exchange's.
        let latest_assistant = self
            .current
            .iter()
            .rposition(|message| message.role == Role::Assistant)
            .unwrap_or(0);
        for index in 0..latest_assistant {
            if total(self) <= budget_tokens {
                break;
            }
            let message = &mut self.current[index];
            if message.role == Role::Tool
                && message.content.chars().count() > SHORTENED_RESULT_CHARS
            {
                let (kept, _) = crate::mcp::cap_text(&message.content, SHORTENED_RESULT_CHARS);
                message.content = format!(
                    "{kept}\n[Shortened to fit the context window; {} has the rest.]",
                    tools::qualified_name(tools::HOST, tools::READ_RESULT)
                );
            }
        }
        total(self)
    }
}

/// Estimated tokens of `messages`.
pub(crate) fn estimate(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|message| {
            let calls: usize = message
                .tool_calls
                .iter()
                .map(|call| call.name.len() + call.arguments.len())
                .sum();
            (message.content.len() + calls) / CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS
        })
        .sum()
}

/// Estimated tokens of the tool definitions.
pub(crate) fn estimate_tools(tools: &[ToolSpec]) -> usize {
    tools
        .iter()
        .map(|tool| {
            (tool.name.len() + tool.description.len() + tool.parameters.to_string().len())
                / CHARS_PER_TOKEN
                + MESSAGE_OVERHEAD_TOKENS
        })
        .sum()
}

/// The messages of one turn, from its events: the question, then each exchange (the assistant's
/// text and calls, the results), then what the host told the model about approvals.
pub(crate) fn turn_messages(events: &[TurnEvent]) -> Vec<Message> {
    let mut builder = Builder::default();
    for event in events {
        builder.add(event);
    }
    builder.finish()
}

/// The call id of the host's confirming call for an approval: never a model's call.
pub(crate) fn approval_call_id(approval_id: Uuid) -> String {
    format!("approval-{approval_id}")
}

#[derive(Default)]
struct Builder {
    messages: Vec<Message>,
    text: String,
    calls: Vec<ToolCall>,
    results: Vec<Message>,
    approval_tools: HashMap<Uuid, String>,
    approval_calls: HashMap<String, String>,
}

impl Builder {
    fn add(&mut self, event: &TurnEvent) {
        match event {
            TurnEvent::TurnStarted { question, .. } => {
                self.flush();
                self.messages.push(Message::user(question.clone()));
            }
            TurnEvent::Text { text } => {
                if !self.results.is_empty() {
                    self.flush();
                }
                self.text.push_str(text);
            }
            TurnEvent::ToolCallStarted {
                call_id,
                server,
                tool,
                arguments,
            } => {
                if call_id.starts_with("approval-") {
                    self.flush();
                    self.approval_calls
                        .insert(call_id.clone(), super::tools::qualified_name(server, tool));
                    return;
                }
                if !self.results.is_empty() {
                    self.flush();
                }
                self.calls.push(ToolCall {
                    id: call_id.clone(),
                    name: super::tools::qualified_name(server, tool),
                    arguments: arguments.to_string(),
                });
            }
            TurnEvent::ToolCallFinished { call_id, outcome } => {
                if let Some(tool) = self.approval_calls.remove(call_id) {
                    self.messages
                        .push(Message::user(prompts::approval_confirmed(
                            &tool,
                            &outcome.text,
                        )));
                    return;
                }
                let for_model = super::trace::model_view(
                    call_id,
                    &outcome.text,
                    outcome.truncated,
                    outcome.bytes as usize,
                );
                self.results
                    .push(Message::tool_result(call_id.clone(), for_model));
            }
            TurnEvent::ApprovalRequested {
                approval_id,
                server,
                tool,
                ..
            } => {
                self.approval_tools
                    .insert(*approval_id, super::tools::qualified_name(server, tool));
            }
            TurnEvent::ApprovalDecided {
                approval_id,
                decision,
                ..
            } => {
                let tool = self
                    .approval_tools
                    .get(approval_id)
                    .cloned()
                    .unwrap_or_else(|| "a tool".to_owned());
                let said = match decision.as_str() {
                    "rejected" => prompts::approval_rejected(&tool),
                    "expired" => prompts::approval_expired(&tool),
                    // Confirmed: the confirming call's result says it.
                    _ => return,
                };
                self.flush();
                self.messages.push(Message::user(said));
            }
            TurnEvent::Notice { .. } => {}
            TurnEvent::TurnFinished { .. } => self.flush(),
        }
    }

    /// Ends the current exchange: the assistant's message, then a result for every call (a call
    /// whose result was never recorded gets one saying so, as the model's API requires).
    fn flush(&mut self) {
        if self.text.is_empty() && self.calls.is_empty() {
            self.messages.append(&mut self.results);
            return;
        }
        let calls = std::mem::take(&mut self.calls);
        let mut results = std::mem::take(&mut self.results);
        for call in &calls {
            if !results
                .iter()
                .any(|result| result.tool_call_id.as_deref() == Some(&call.id))
            {
                results.push(Message::tool_result(
                    call.id.clone(),
                    "[The turn ended before this call returned.]",
                ));
            }
        }
        self.messages
            .push(Message::assistant(std::mem::take(&mut self.text), calls));
        self.messages.extend(results);
    }

    fn finish(mut self) -> Vec<Message> {
        self.flush();
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CallStatus, ToolCallOutcome};
    use serde_json::json;

    fn finished(call_id: &str, text: &str) -> TurnEvent {
        TurnEvent::ToolCallFinished {
            call_id: call_id.into(),
            outcome: ToolCallOutcome {
                status: CallStatus::Ok,
                text: text.into(),
                duration_ms: 1,
                truncated: false,
                rows: None,
                bytes: text.len() as u64,
                sql: None,
                chart: None,
            },
        }
    }

    fn started(call_id: &str) -> TurnEvent {
        TurnEvent::ToolCallStarted {
            call_id: call_id.into(),
            server: "internal-mcp".into(),
            tool: "run_select".into(),
            arguments: json!({"sql": "SELECT 1"}),
        }
    }

    fn turn(question: &str, result: &str) -> Vec<TurnEvent> {
        vec![
            TurnEvent::TurnStarted {
                question: question.into(),
                model: "m".into(),
            },
            TurnEvent::Text {
                text: "Let me look. ".into(),
            },
            started("c1"),
            finished("c1", result),
            TurnEvent::Text {
                text: "The answer.".into(),
            },
        ]
    }

    #[test]
    fn a_turn_is_rebuilt_as_question_exchanges_and_answer() {
        let mut events = turn("how many?", "[[1]]");
        events.push(started("c2"));
        let messages = turn_messages(&events);
        let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Assistant,
                Role::Tool
            ]
        );
        assert_eq!(messages[1].content, "Let me look. ");
        assert_eq!(messages[1].tool_calls[0].name, "internal-mcp__run_select");
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(messages[3].content, "The answer.");
        assert!(
            messages[4].content.contains("ended before"),
            "a dangling call gets a result"
        );
    }

    #[test]
    fn long_conversations_are_fitted_oldest_results_first_then_oldest_turns() {
        let big = "x".repeat(40_000);
        let mut conversation = Conversation {
            system: Message::system("system"),
            earlier: (0..3)
                .map(|n| turn_messages(&turn(&format!("question {n}"), &big)))
                .collect(),
            current: vec![Message::user("now?")],
            dropped_turns: 0,
        };
        let before = estimate(&conversation.messages());
        assert!(before > 30_000, "{before}");

        // Room for every turn once results are dropped.
        let after = conversation.fit(2_000, &[]);
        assert!(after <= 2_000, "{after}");
        assert_eq!(conversation.earlier.len(), 3);
        assert!(
            conversation
                .earlier
                .iter()
                .flatten()
                .all(|m| m.role != Role::Tool || m.content == DROPPED_RESULT)
        );
        eprintln!("context estimate: {before} tokens before fitting, {after} after");

        // Less room: the oldest turns go, the question stays.
        let after = conversation.fit(40, &[]);
        assert!(conversation.dropped_turns >= 1);
        let messages = conversation.messages();
        assert_eq!(messages.last().map(|m| m.content.as_str()), Some("now?"));
        assert!(messages[1].content.contains("left out"), "{after}");
    }

    /// A conversation whose current turn has two results of 20,000 characters each.
    fn two_big_results_in_the_current_turn() -> Conversation {
        let big = "y".repeat(20_000);
        let mut events = turn("q", &big);
        events.push(started("c2"));
        events.push(finished("c2", &big));
        Conversation {
            system: Message::system("s"),
            earlier: Vec::new(),
            current: turn_messages(&events),
            dropped_turns: 0,
        }
    }

    #[test]
    fn the_current_turns_older_results_are_shortened_but_not_the_latest() {
        let mut conversation = two_big_results_in_the_current_turn();
        conversation.fit(6_000, &[]);
        let tools: Vec<&Message> = conversation
            .current
            .iter()
            .filter(|m| m.role == Role::Tool)
            .collect();
        assert!(tools[0].content.len() < 1_000);
        assert_eq!(tools[1].content.len(), 20_000);
    }

    fn offered_names(specs: &[ToolSpec]) -> Vec<&str> {
        specs.iter().map(|spec| spec.name.as_str()).collect()
    }

    #[test]
    fn a_result_shortened_to_fit_comes_with_the_paging_tool_it_points_to() {
        let mut conversation = two_big_results_in_the_current_turn();
        let mut tool_set = ToolSet::default();

        // Room for everything: nothing is shortened and there is nothing to page.
        let (_, specs) = conversation.fit_with_tools(100_000, &mut tool_set);
        assert!(!offered_names(&specs).contains(&"host__read_result"));
        assert!(!tool_set.offers_paging());

        // Less room: the older result is shortened, says host__read_result has the rest, and
        // host__read_result is offered with it.
        let (estimate, specs) = conversation.fit_with_tools(6_000, &mut tool_set);
        assert!(estimate <= 6_000, "{estimate}");
        assert!(
            conversation
                .current
                .iter()
                .any(|message| message.role == Role::Tool
                    && message.content.contains("host__read_result has the rest")),
        );
        assert_eq!(offered_names(&specs), ["host__read_result"]);
        assert!(tool_set.offers_paging());
    }

    #[test]
    fn a_result_cut_in_an_earlier_turn_comes_with_the_paging_tool() {
        let mut events = turn("q", "the first part");
        if let Some(TurnEvent::ToolCallFinished { outcome, .. }) = events.get_mut(3) {
            outcome.truncated = true;
        }
        let offered_within = |budget| {
            let mut conversation = Conversation {
                system: Message::system("s"),
                earlier: vec![turn_messages(&events)],
                current: vec![Message::user("and the rest?")],
                dropped_turns: 0,
            };
            let (_, specs) = conversation.fit_with_tools(budget, &mut ToolSet::default());
            specs.into_iter().map(|spec| spec.name).collect::<Vec<_>>()
        };
        assert_eq!(offered_within(100_000), ["host__read_result"]);
        // Dropped to fit, the result no longer points anywhere: nothing to offer.
        assert!(offered_within(40).is_empty());
    }
}
