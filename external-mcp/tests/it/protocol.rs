//! What the MCP protocol asks of the server beyond its tools' answers: argument mistakes are tool
//! errors the model can correct, every tool's `structuredContent` matches its `outputSchema` and
//! stands on its own (truncation and how to continue are in it), and tools and the server carry
//! titles.

use std::collections::BTreeSet;

use external_mcp::tools::all_tools;
use serde_json::{Value, json};

use crate::backend::{Backend, SEED_UNTIL, closed_port_url};
use crate::clients::{as_user, call, failed, fixed, in_process, ok_call, settings};

/// Each tool with a mistaken argument of each kind: the result is `isError` (never a JSON-RPC
/// error, which `call` would fail on), names the tool's action and the argument, says what is
/// accepted, and nothing reaches the API (here a closed port, which would say "cannot reach").
#[tokio::test]
async fn every_argument_mistake_is_a_tool_error_the_model_can_correct() {
    let client = in_process(settings(&closed_port_url()), fixed("dmo_any_token")).await;
    let cases: &[(&str, Value, &[&str])] = &[
        (
            "find_services",
            json!({ "colour": "red" }),
            &[
                "Could not find services",
                "unknown field `colour`",
                "`query`",
            ],
        ),
        (
            "find_services",
            json!({ "health": "sick" }),
            &["`health`", "`sick`", "`critical`"],
        ),
        (
            "find_services",
            json!({ "limit": "ten" }),
            &["`limit`", "invalid type"],
        ),
        (
            "service_overview",
            json!({}),
            &[
                "Could not get the service overview",
                "missing field `service`",
            ],
        ),
        (
            "service_overview",
            json!({ "service": 5 }),
            &["`service`", "invalid type"],
        ),
        (
            "metric_summary",
            json!({ "service": "checkout-api" }),
            &["Could not summarise the metric", "missing field `metric`"],
        ),
        (
            "list_alerts",
            json!({ "state": "burning" }),
            &["Could not list alerts", "`state`", "`firing`"],
        ),
        (
            "list_incidents",
            json!({ "severity": "urgent" }),
            &["Could not list incidents", "`severity`", "`high`"],
        ),
        (
            "get_incident",
            json!({ "reference": "INC-1" }),
            &["Could not get the incident", "unknown field `reference`"],
        ),
        (
            "open_incident",
            json!({ "title": "Down", "severity": "urgent" }),
            &["Could not open the incident", "`severity`", "`critical`"],
        ),
        (
            "acknowledge_incident",
            json!({ "incident": ["INC-1"] }),
            &[
                "Could not acknowledge the incident",
                "`incident`",
                "invalid type",
            ],
        ),
        (
            "resolve_incident",
            json!({ "incident": "INC-1", "force": true }),
            &["Could not resolve the incident", "unknown field `force`"],
        ),
        (
            "add_incident_note",
            json!({ "incident": "INC-1" }),
            &["Could not add the note", "missing field `note`"],
        ),
        (
            "list_deployments",
            json!({ "status": "exploded" }),
            &["Could not list deployments", "`status`", "`rolled_back`"],
        ),
    ];
    for (tool, arguments, expected) in cases {
        let message = failed(&call(&client, tool, arguments.clone()).await, expected);
        assert!(message.contains("Correct the argument"), "{message}");
        assert!(
            !message.contains("cannot reach"),
            "{tool} called the API: {message}"
        );
    }
    let covered: BTreeSet<&str> = cases.iter().map(|(tool, _, _)| *tool).collect();
    let tools = all_tools();
    let every: BTreeSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(
        covered, every,
        "every tool reads its arguments the same way"
    );
}

/// Every tool, called for real (reads and the whole write lifecycle), answers with
/// `structuredContent` that matches its `outputSchema` (`ok_call` checks it); a cut list says in
/// its structured part how to continue.
#[tokio::test]
async fn every_tools_structured_content_matches_its_output_schema() {
    let backend = Backend::start().await;
    let client = as_user(&backend, "acme", "responder").await;
    let mut called = BTreeSet::new();
    let mut ok = async |tool: &'static str, arguments: Value| {
        called.insert(tool);
        ok_call(&client, tool, arguments).await
    };

    for (tool, items) in [
        ("find_services", "services"),
        ("list_alerts", "alerts"),
        ("list_incidents", "incidents"),
        ("list_deployments", "deployments"),
    ] {
        let first = ok(tool, json!({ "limit": 1 })).await;
        assert_eq!(first[items].as_array().map(Vec::len), Some(1), "{tool}");
        assert_eq!(first["truncated"], true, "{tool}");
        let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
        let hint = first["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains("`cursor` = next_cursor"),
            "{tool}: how to continue must be in structuredContent: {hint:?}"
        );
        ok(tool, json!({ "limit": 1, "cursor": cursor })).await;
    }
    let overview = ok("service_overview", json!({ "service": "checkout-api" })).await;
    assert_eq!(
        overview["truncated"].as_bool(),
        Some(overview["hint"].is_string()),
        "a cut overview says so in its hint: {overview}"
    );
    ok(
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "latency_p95_ms", "window": "6h", "end": SEED_UNTIL }),
    )
    .await;
    let empty = ok(
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "error_rate", "window": "1h", "end": "2000-01-01T00:00:00Z" }),
    )
    .await;
    assert!(empty["hint"].as_str().unwrap().contains("No samples"));

    let opened = ok(
        "open_incident",
        json!({ "title": "Schema check", "severity": "low", "services": ["checkout-api"] }),
    )
    .await;
    let reference = opened["reference"].as_str().unwrap().to_owned();
    ok("get_incident", json!({ "incident": reference })).await;
    ok("acknowledge_incident", json!({ "incident": reference })).await;
    ok("acknowledge_incident", json!({ "incident": reference })).await;
    ok(
        "add_incident_note",
        json!({ "incident": reference, "note": "checked" }),
    )
    .await;
    ok(
        "resolve_incident",
        json!({ "incident": reference, "resolution": "done" }),
    )
    .await;

    let tools = all_tools();
    let every: BTreeSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(called, every);
}

#[tokio::test]
async fn the_server_and_every_tool_have_a_title() {
    let client = in_process(settings(&closed_port_url()), fixed("dmo_any_token")).await;
    let info = client.peer_info().expect("the server's initialize result");
    let server = info.server_info.as_ref().expect("serverInfo");
    assert_eq!(server.name, "external-mcp");
    assert_eq!(server.title.as_deref(), Some("Demo Monitoring"));
    assert!(
        server
            .description
            .as_deref()
            .is_some_and(|text| text.len() > 40)
    );
    assert_eq!(
        server.website_url.as_deref(),
        Some("https://monitoring.example.com/")
    );
    for tool in client.list_all_tools().await.expect("tools/list") {
        let title = tool.title.as_deref().unwrap_or_default();
        assert!(
            !title.is_empty() && title.len() <= 30 && title != tool.name,
            "{}: a short title for people, got {title:?}",
            tool.name
        );
    }
}
