//! The Anthropic provider against the scripted model server over real HTTP: blocks streamed and
//! assembled, the request's shape and headers, how it fails, and a whole turn of the agent loop
//! it drives through the real internal-mcp.

use internal_host::agent::{Agent, TurnLimits};
use internal_host::events::{CallStatus, TurnEvent, TurnStatus};
use internal_host::llm::{FinishReason, LlmError, LlmSettings, Message, StreamEvent, Usage};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::agent::{finished_calls, harness};
use crate::scripted_model::{Reply, ScriptedModel, collect, request, sql_tool, text_of};

const KEY: &str = "sk-ant-scripted-test-key-0123456789";

fn ok_events(events: &[Result<StreamEvent, LlmError>]) -> Vec<StreamEvent> {
    events
        .iter()
        .map(|event| event.clone().expect("no error"))
        .collect()
}

#[tokio::test]
async fn text_and_tool_use_blocks_stream_and_results_round_trip() {
    let model = ScriptedModel::anthropic(vec![
        Reply::text("Let me look — ein Moment.")
            .and_tool_call(
                "run_select",
                json!({"sql": "SELECT count(*) FROM incidents"}),
            )
            .and_tool_call("list_tables", json!({"schema": "public"})),
        Reply::text("There are 3."),
    ])
    .await;
    let provider = model.settings().with_api_key(KEY).build().expect("builds");
    assert_eq!(provider.model().provider, "anthropic");
    let tools = vec![sql_tool("run_select"), sql_tool("list_tables")];
    let mut messages = vec![Message::system("You help."), Message::user("Count")];

    let events =
        ok_events(&collect(provider.as_ref(), request(messages.clone(), tools.clone())).await);
    assert_eq!(
        text_of(&events.iter().cloned().map(Ok).collect::<Vec<_>>()),
        "Let me look — ein Moment."
    );
    let calls: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2, "{events:?}");
    assert_eq!(calls[0].id, "toolu_0_0");
    assert_eq!(calls[0].name, "run_select");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].arguments).expect("JSON"),
        json!({"sql": "SELECT count(*) FROM incidents"})
    );
    assert_eq!(calls[1].id, "toolu_0_1");
    let tail = &events[events.len() - 2..];
    assert_eq!(
        tail,
        [
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                output_tokens: 7
            }),
            StreamEvent::Finished(FinishReason::ToolCalls),
        ]
    );

    messages.push(Message::assistant(
        "Let me look — ein Moment.",
        calls.clone(),
    ));
    messages.push(Message::tool_result(&calls[0].id, "3"));
    messages.push(Message::tool_result(&calls[1].id, "incidents, alerts"));
    let events = collect(provider.as_ref(), request(messages, tools)).await;
    assert_eq!(text_of(&events), "There are 3.");
    assert_eq!(
        events.last(),
        Some(&Ok(StreamEvent::Finished(FinishReason::Stop)))
    );

    let requests = model.requests();
    let first = &requests[0];
    assert_eq!(first.path, "/v1/messages");
    let header = |name: &str| {
        first
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(header("authorization"), None);
    assert_eq!(first.body["system"], "You help.");
    assert_eq!(first.body["stream"], true);
    assert_eq!(first.body["max_tokens"], 256);
    assert_eq!(
        first.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Count"}]}])
    );
    assert_eq!(first.body["tools"][0]["name"], "run_select");
    assert_eq!(
        first.body["tools"][0]["input_schema"]["required"],
        json!(["sql"])
    );

    let sent = &requests[1].body["messages"];
    assert_eq!(sent.as_array().map(Vec::len), Some(3), "{sent}");
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["content"][0]["type"], "text");
    assert_eq!(
        sent[1]["content"][1],
        json!({"type": "tool_use", "id": "toolu_0_0", "name": "run_select",
               "input": {"sql": "SELECT count(*) FROM incidents"}})
    );
    assert_eq!(sent[2]["role"], "user");
    assert_eq!(
        sent[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_0_0", "content": "3"},
            {"type": "tool_result", "tool_use_id": "toolu_0_1", "content": "incidents, alerts"},
        ])
    );
    for sent in &requests {
        assert!(!sent.raw_body.contains(KEY), "the key is not in the body");
    }
}

#[tokio::test]
async fn missing_ids_are_made_up_and_raw_arguments_pass_through() {
    let written = r#"{"sql": "SELECT 1"#;
    let model = ScriptedModel::anthropic(vec![
        Reply::tool_call("run_select", json!({"sql": "SELECT 1"})).with_null_ids(),
        Reply::tool_call_with_raw_arguments("run_select", written),
    ])
    .await;
    let provider = model.provider();
    let ask = || request(vec![Message::user("x")], vec![sql_tool("run_select")]);
    let events = ok_events(&collect(provider.as_ref(), ask()).await);
    let Some(StreamEvent::ToolCall(call)) = events.first() else {
        panic!("a call first: {events:?}");
    };
    assert!(call.id.starts_with("call_"), "{call:?}");
    let events = ok_events(&collect(provider.as_ref(), ask()).await);
    let Some(StreamEvent::ToolCall(call)) = events.first() else {
        panic!("a call first: {events:?}");
    };
    assert_eq!(call.arguments, written);
}

#[tokio::test]
async fn errors_statuses_and_events_are_reported() {
    let message_start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n";
    let model = ScriptedModel::anthropic(vec![
        Reply::status(429, "Number of request tokens has exceeded your rate limit"),
        Reply::raw(vec![
            message_start.into(),
            ": a comment\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n".into(),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into(),
        ]),
        Reply::malformed_json(),
        Reply::raw(vec![message_start.into()]),
    ])
    .await;
    let provider = model.provider();
    let ask = || request(vec![Message::user("x")], Vec::new());
    assert_eq!(
        collect(provider.as_ref(), ask()).await,
        [Err(LlmError::Status {
            status: 429,
            message: "Number of request tokens has exceeded your rate limit".into()
        })]
    );
    assert_eq!(
        collect(provider.as_ref(), ask()).await,
        [Err(LlmError::Status {
            status: 529,
            message: "Overloaded".into()
        })]
    );
    let events = collect(provider.as_ref(), ask()).await;
    assert!(
        matches!(events.last(), Some(Err(LlmError::Protocol(message))) if message.contains("JSON")),
        "{events:?}"
    );
    let events = collect(provider.as_ref(), ask()).await;
    assert!(
        matches!(events.last(), Some(Err(LlmError::Protocol(message))) if message.contains("ended")),
        "{events:?}"
    );
}

#[tokio::test]
async fn stop_reasons_and_missing_usage() {
    let model = ScriptedModel::anthropic(vec![
        Reply::text("cut")
            .with_finish_reason("max_tokens")
            .without_usage(),
        Reply::text("no").with_finish_reason("refusal"),
    ])
    .await;
    let provider = model.provider();
    let ask = || request(vec![Message::user("x")], Vec::new());
    let events = ok_events(&collect(provider.as_ref(), ask()).await);
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, StreamEvent::Usage(_))),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished(FinishReason::Length))
    );
    let events = ok_events(&collect(provider.as_ref(), ask()).await);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished(FinishReason::Other))
    );
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout_and_closes() {
    let model = ScriptedModel::anthropic(vec![Reply::stall()]).await;
    let provider = LlmSettings {
        idle_timeout_seconds: 1,
        ..model.settings()
    }
    .build()
    .expect("builds");
    let events = collect(
        provider.as_ref(),
        request(vec![Message::user("x")], Vec::new()),
    )
    .await;
    assert_eq!(events, [Err(LlmError::Idle(1))]);
    model.wait_for_closed_streams(1).await;
}

#[tokio::test]
async fn the_provider_never_prints_its_key() {
    let model = ScriptedModel::anthropic(Vec::new()).await;
    let provider = model.settings().with_api_key(KEY).build().expect("builds");
    let printed = format!("{provider:?}");
    assert!(printed.contains("ApiKey(..)"), "{printed}");
    assert!(!printed.contains(KEY), "{printed}");
}

#[tokio::test]
async fn the_anthropic_provider_drives_a_turn_through_the_real_internal_mcp() {
    let sql = "SELECT count(*) AS incidents FROM incidents";
    let model = ScriptedModel::anthropic(vec![
        Reply::text("Let me count them.")
            .and_tool_call("internal-mcp__run_select", json!({"sql": sql})),
        Reply::text("There are several incidents."),
    ])
    .await;
    let harness = harness("marcus", TurnLimits::DEFAULT, Vec::new()).await;
    let agent = Agent::new(
        model.provider(),
        harness.state.internal_mcp().clone(),
        harness.state.database().clone(),
        TurnLimits::DEFAULT,
    );
    let turn = harness.turn("How many incidents do we have?").await;
    let status = agent
        .run_turn(&turn, &harness.events, CancellationToken::new())
        .await
        .expect("the turn runs");
    assert_eq!(status, TurnStatus::Completed);

    // The call reached internal-mcp as the user, and its trace shows the SQL it ran.
    let events = harness.events_of(&turn).await;
    let finished = finished_calls(&events);
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].0, "toolu_0_0");
    assert_eq!(finished[0].1, CallStatus::Ok, "{}", finished[0].2);
    let traced_sql = events.iter().find_map(|event| match event {
        TurnEvent::ToolCallFinished { outcome, .. } => outcome.sql.clone(),
        _ => None,
    });
    assert_eq!(traced_sql.as_deref(), Some(sql));
    let audited = harness.audited(&turn).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].0, "run_select");
    let answer: String = events
        .iter()
        .filter_map(|event| match event {
            TurnEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(answer.ends_with("There are several incidents."), "{answer}");

    // The second request carried the assistant's tool_use and its result, under the same id.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let sent = requests[1].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    let blocks: Vec<&Value> = sent
        .iter()
        .filter_map(|message| message["content"].as_array())
        .flatten()
        .collect();
    let tool_use = blocks
        .iter()
        .find(|block| block["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use block in {sent:?}"));
    assert_eq!(tool_use["id"], "toolu_0_0");
    assert_eq!(tool_use["name"], "internal-mcp__run_select");
    assert_eq!(tool_use["input"], json!({"sql": sql}));
    let results: Vec<&&Value> = blocks
        .iter()
        .filter(|block| block["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 1, "{sent:?}");
    assert_eq!(results[0]["tool_use_id"], "toolu_0_0");
    let content = results[0]["content"].as_str().expect("text content");
    assert!(content.contains("\"incidents\""), "{content}");
    assert_eq!(model.replies_left(), 0);
}
