//! The OpenAI-compatible provider against the scripted model server over real HTTP: what it
//! streams, what it sends, and how it fails.

use std::time::Instant;

use futures_util::StreamExt;
use internal_host::llm::{
    FinishReason, LlmError, LlmSettings, Message, StreamEvent, ToolCall, ToolMode, Usage,
};
use serde_json::{Value, json};

use crate::scripted_model::{Reply, ScriptedModel, collect, request, sql_tool, text_of};

const KEY: &str = "sk-scripted-test-key-0123456789";

fn ok_events(events: &[Result<StreamEvent, LlmError>]) -> Vec<StreamEvent> {
    events
        .iter()
        .map(|event| event.clone().expect("no error"))
        .collect()
}

fn tool_calls(events: &[StreamEvent]) -> Vec<ToolCall> {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn text_streams_in_order_then_usage_then_one_finish() {
    let text = "Hello, world! Grüße 🚀 and some more words to stream.";
    let model = ScriptedModel::openai(vec![Reply::text(text)]).await;
    let provider = model.provider();
    let events = collect(
        provider.as_ref(),
        request(
            vec![Message::system("You help."), Message::user("Hi")],
            Vec::new(),
        ),
    )
    .await;
    let events = ok_events(&events);
    let deltas = events
        .iter()
        .filter(|event| matches!(event, StreamEvent::TextDelta(_)))
        .count();
    assert!(deltas > 3, "the text arrives in pieces: {events:?}");
    assert_eq!(
        text_of(&events.iter().cloned().map(Ok).collect::<Vec<_>>()),
        text
    );
    let tail = &events[deltas..];
    assert_eq!(
        tail,
        [
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                output_tokens: 7
            }),
            StreamEvent::Finished(FinishReason::Stop),
        ]
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "scripted-model");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(sent.body["max_tokens"], 256);
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Hi"},
        ])
    );
    assert!(sent.body.get("tools").is_none(), "no tools, no field");
    assert!(
        sent.headers.get("authorization").is_none(),
        "no key, no header"
    );
}

#[tokio::test]
async fn interleaved_tool_call_deltas_are_assembled_by_index() {
    let model = ScriptedModel::openai(vec![Reply::tool_calls(vec![
        (
            "run_select",
            json!({"sql": "SELECT count(*) FROM incidents"}),
        ),
        ("list_tables", json!({"schema": "public", "limit": 20})),
    ])])
    .await;
    let provider = model.provider();
    let events = collect(
        provider.as_ref(),
        request(
            vec![Message::user("Count")],
            vec![sql_tool("run_select"), sql_tool("list_tables")],
        ),
    )
    .await;
    let events = ok_events(&events);
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 2, "{events:?}");
    assert_eq!(events.len(), 4, "two calls, usage, finish: {events:?}");
    assert!(matches!(events[2], StreamEvent::Usage(_)), "{events:?}");
    assert_eq!(calls[0].id, "call_0_0");
    assert_eq!(calls[0].name, "run_select");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].arguments).expect("JSON"),
        json!({"sql": "SELECT count(*) FROM incidents"})
    );
    assert_eq!(calls[1].id, "call_0_1");
    assert_eq!(calls[1].name, "list_tables");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].arguments).expect("JSON"),
        json!({"schema": "public", "limit": 20})
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished(FinishReason::ToolCalls))
    );
    let tools = &model.requests()[0].body["tools"];
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "run_select");
    assert_eq!(
        tools[1]["function"]["parameters"]["required"],
        json!(["sql"])
    );
}

#[tokio::test]
async fn null_ids_are_replaced_and_the_made_up_id_round_trips() {
    let model = ScriptedModel::openai(vec![
        Reply::tool_call("run_select", json!({"sql": "SELECT 1"})).with_null_ids(),
        Reply::text("One row."),
    ])
    .await;
    let provider = model.provider();
    let tools = vec![sql_tool("run_select")];
    let mut messages = vec![Message::user("Count")];
    let events = collect(provider.as_ref(), request(messages.clone(), tools.clone())).await;
    let calls = tool_calls(&ok_events(&events));
    assert_eq!(calls.len(), 1);
    let id = calls[0].id.clone();
    assert!(id.starts_with("call_") && id.len() > 10, "{id}");

    messages.push(Message::assistant("", calls));
    messages.push(Message::tool_result(&id, "1 row"));
    let events = collect(provider.as_ref(), request(messages, tools)).await;
    assert_eq!(text_of(&events), "One row.");

    let second = &model.requests()[1];
    let sent = &second.body["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["content"], Value::Null);
    assert_eq!(sent[1]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(sent[1]["tool_calls"][0]["type"], "function");
    assert_eq!(sent[1]["tool_calls"][0]["function"]["name"], "run_select");
    assert_eq!(
        sent[2],
        json!({"role": "tool", "tool_call_id": id, "content": "1 row"})
    );
    assert!(
        !second.raw_body.contains("\"id\":null"),
        "{}",
        second.raw_body
    );
}

#[tokio::test]
async fn malformed_tool_arguments_pass_through_verbatim() {
    let written = r#"{"sql": "SELECT * FROM incidents WHERE title = 'x"#;
    let model = ScriptedModel::openai(vec![Reply::tool_call_with_raw_arguments(
        "run_select",
        written,
    )])
    .await;
    let events = collect(
        model.provider().as_ref(),
        request(vec![Message::user("x")], vec![sql_tool("run_select")]),
    )
    .await;
    let calls = tool_calls(&ok_events(&events));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].arguments, written);
}

#[tokio::test]
async fn malformed_event_json_is_a_protocol_error() {
    let model = ScriptedModel::openai(vec![Reply::malformed_json()]).await;
    let events = collect(
        model.provider().as_ref(),
        request(vec![Message::user("x")], Vec::new()),
    )
    .await;
    println!("{events:?}");
    match events.last() {
        Some(Err(LlmError::Protocol(message))) => assert!(message.contains("JSON"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Ok(StreamEvent::Finished(_)))),
        "no finish after an error"
    );
}

#[tokio::test]
async fn error_statuses_carry_the_servers_message_and_never_the_key() {
    let model = ScriptedModel::openai(vec![
        Reply::status(429, "Rate limit reached, slow down"),
        Reply::status(401, format!("Incorrect API key provided: {KEY}")),
        Reply::status(500, "x".repeat(5_000)),
        Reply::raw(vec![format!(
            "data: {{\"error\":{{\"message\":\"bad key {KEY}\"}}}}\n\n"
        )]),
    ])
    .await;
    let provider = model.settings().with_api_key(KEY).build().expect("builds");
    let ask = || request(vec![Message::user("secret question")], Vec::new());

    let events = collect(provider.as_ref(), ask()).await;
    assert_eq!(
        events,
        [Err(LlmError::Status {
            status: 429,
            message: "Rate limit reached, slow down".into()
        })]
    );
    let events = collect(provider.as_ref(), ask()).await;
    let Some(Err(error)) = events.last() else {
        panic!("an error: {events:?}");
    };
    let printed = error.to_string();
    assert!(
        printed.contains("401") && printed.contains("[redacted]"),
        "{printed}"
    );
    assert!(!printed.contains(KEY), "{printed}");
    assert!(!printed.contains("secret question"), "{printed}");
    let events = collect(provider.as_ref(), ask()).await;
    let Some(Err(LlmError::Status { message, .. })) = events.last() else {
        panic!("an error: {events:?}");
    };
    assert!(
        message.chars().count() <= 301,
        "cut short: {}",
        message.len()
    );
    let events = collect(provider.as_ref(), ask()).await;
    assert_eq!(
        events,
        [Err(LlmError::Status {
            status: 500,
            message: "bad key [redacted]".into()
        })]
    );

    for sent in model.requests() {
        assert_eq!(
            sent.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert!(!sent.raw_body.contains(KEY), "the key is not in the body");
    }
}

#[tokio::test]
async fn mid_stream_errors_and_early_ends_are_reported() {
    let model = ScriptedModel::openai(vec![
        Reply::raw(vec![
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n".into(),
            "data: {\"error\":{\"message\":\"the model crashed\",\"code\":503}}\n\n".into(),
        ]),
        Reply::raw(vec![
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n".into(),
        ]),
        // A server that ends the body after the finish reason, without [DONE].
        Reply::raw(vec![
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\r\n\r\n".into(),
        ]),
    ])
    .await;
    let provider = model.provider();
    let ask = || request(vec![Message::user("x")], Vec::new());
    let events = collect(provider.as_ref(), ask()).await;
    assert_eq!(
        events,
        [
            Ok(StreamEvent::TextDelta("Hi".into())),
            Err(LlmError::Status {
                status: 503,
                message: "the model crashed".into()
            }),
        ]
    );
    let events = collect(provider.as_ref(), ask()).await;
    assert!(
        matches!(events.last(), Some(Err(LlmError::Protocol(message))) if message.contains("ended")),
        "{events:?}"
    );
    let events = collect(provider.as_ref(), ask()).await;
    assert_eq!(
        events,
        [
            Ok(StreamEvent::TextDelta("Hi".into())),
            Ok(StreamEvent::Finished(FinishReason::Stop)),
        ]
    );
}

#[tokio::test]
async fn finish_reasons_and_missing_usage() {
    let model = ScriptedModel::openai(vec![
        Reply::text("cut")
            .with_finish_reason("length")
            .without_usage(),
        Reply::text("filtered").with_finish_reason("content_filter"),
    ])
    .await;
    let provider = model.provider();
    let ask = || request(vec![Message::user("x")], Vec::new());
    let events = ok_events(&collect(provider.as_ref(), ask()).await);
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, StreamEvent::Usage(_)))
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
async fn a_stalled_stream_hits_the_idle_timeout() {
    let model = ScriptedModel::openai(vec![Reply::stall()]).await;
    let provider = LlmSettings {
        idle_timeout_seconds: 1,
        ..model.settings()
    }
    .build()
    .expect("builds");
    let started = Instant::now();
    let events = collect(
        provider.as_ref(),
        request(vec![Message::user("x")], Vec::new()),
    )
    .await;
    println!("idle timeout fired after {:?}", started.elapsed());
    assert_eq!(events, [Err(LlmError::Idle(1))]);
    model.wait_for_closed_streams(1).await;
}

#[tokio::test]
async fn dropping_the_stream_closes_the_request() {
    let model = ScriptedModel::openai(vec![
        Reply::stall(),
        Reply::text("a long answer ".repeat(50))
            .with_chunk_delay(std::time::Duration::from_millis(20)),
    ])
    .await;
    let provider = model.provider();

    // Stalled: the request is out, nothing comes back; the caller gives up.
    let mut stream = provider.stream(request(vec![Message::user("x")], Vec::new()));
    let waiting_for_the_request = async {
        while model.requests().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        event = stream.next() => panic!("nothing should arrive: {event:?}"),
        () = waiting_for_the_request => {}
    }
    drop(stream);
    model.wait_for_closed_streams(1).await;

    // Streaming: the caller reads one delta and stops.
    let mut stream = provider.stream(request(vec![Message::user("x")], Vec::new()));
    let first = stream.next().await;
    assert!(
        matches!(first, Some(Ok(StreamEvent::TextDelta(_)))),
        "{first:?}"
    );
    drop(stream);
    model.wait_for_closed_streams(2).await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    let provider = LlmSettings::openai_compatible(format!("http://{address}/v1"), "m")
        .build()
        .expect("builds");
    let events = collect(
        provider.as_ref(),
        request(vec![Message::user("x")], Vec::new()),
    )
    .await;
    assert!(
        matches!(events.as_slice(), [Err(LlmError::Unreachable(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn json_schema_mode_sends_a_schema_and_reads_calls_and_answers() {
    let model = ScriptedModel::openai(vec![
        Reply::json_tool_call("run_select", json!({"sql": "SELECT 1"})),
        Reply::json_answer("One row."),
    ])
    .await;
    let provider = LlmSettings {
        tool_mode: ToolMode::JsonSchema,
        local: true,
        ..model.settings()
    }
    .build()
    .expect("builds");
    assert!(provider.model().local);
    let tools = vec![sql_tool("run_select"), sql_tool("list_tables")];
    let mut messages = vec![Message::system("You help."), Message::user("Count")];

    let events =
        ok_events(&collect(provider.as_ref(), request(messages.clone(), tools.clone())).await);
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0].name, "run_select");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].arguments).expect("JSON"),
        json!({"sql": "SELECT 1"})
    );
    assert!(calls[0].id.starts_with("call_"));
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, StreamEvent::TextDelta(_)))
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished(FinishReason::ToolCalls))
    );

    let first = &model.requests()[0].body;
    assert!(first.get("tools").is_none(), "no native tools: {first}");
    assert_eq!(first["response_format"]["type"], "json_schema");
    // A new question: the model must call a tool before it may answer.
    let schema = &first["response_format"]["json_schema"]["schema"];
    let tools_allowed: Vec<&Value> = schema["anyOf"]
        .as_array()
        .expect("one branch per tool")
        .iter()
        .map(|branch| &branch["properties"]["tool"]["enum"][0])
        .collect();
    assert_eq!(tools_allowed, [&json!("run_select"), &json!("list_tables")]);
    assert!(
        schema["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .all(|branch| branch["required"] == json!(["tool", "arguments"])),
        "{schema}"
    );
    let system = first["messages"][0]["content"].as_str().expect("text");
    assert!(system.starts_with("You help."), "{system}");
    assert!(
        system.contains("list_tables") && system.contains("\"answer\""),
        "{system}"
    );

    messages.push(Message::assistant("", calls.clone()));
    messages.push(Message::tool_result(&calls[0].id, "1 row"));
    let events = ok_events(&collect(provider.as_ref(), request(messages, tools)).await);
    assert_eq!(
        events,
        [
            StreamEvent::TextDelta("One row.".into()),
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                output_tokens: 7
            }),
            StreamEvent::Finished(FinishReason::Stop),
        ]
    );
    let schema = &model.requests()[1].body["response_format"]["json_schema"]["schema"];
    assert_eq!(
        schema["anyOf"][0]["anyOf"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(schema["anyOf"][1]["required"], json!(["answer"]));
    let second = &model.requests()[1].body["messages"];
    let roles: Vec<&str> = second
        .as_array()
        .expect("messages")
        .iter()
        .map(|message| message["role"].as_str().expect("a role"))
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(
        second[3]["content"]
            .as_str()
            .expect("text")
            .contains("1 row"),
        "{second}"
    );
}

#[tokio::test]
async fn the_provider_never_prints_its_key() {
    let model = ScriptedModel::openai(Vec::new()).await;
    let provider = model.settings().with_api_key(KEY).build().expect("builds");
    let printed = format!("{provider:?}");
    println!("{printed}");
    assert!(printed.contains("ApiKey(..)"), "{printed}");
    assert!(!printed.contains(KEY), "{printed}");
}
