//! The external user path, end to end: the user's MCP host runs the real `external-mcp` binary
//! over stdio with the user's own token; it answers from the real `demo-backend` binary, which
//! reads PostgreSQL started by testcontainers.

use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use test_harness::backend::{Backend, token};
use test_harness::process::binary;
use tokio::process::Command;

/// An MCP client speaking to `external-mcp` started as the user's host would start it.
async fn host_with_token(backend: &Backend, token: &str) -> RunningService<RoleClient, ()> {
    let program = binary("external-mcp");
    let transport = TokioChildProcess::new(Command::new(program).configure(|command| {
        command
            .env("DEMO_API_URL", &backend.url)
            .env("DEMO_API_TOKEN", token)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
    }))
    .expect("external-mcp starts");
    ().serve(transport)
        .await
        .expect("the MCP handshake succeeds")
}

/// Calls a tool that must succeed and returns its structured content.
async fn call(client: &RunningService<RoleClient, ()>, tool: &str, arguments: Value) -> Value {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: protocol error {error}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} failed: {:?}",
        result.content
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool} returned no structuredContent"))
}

#[tokio::test]
async fn a_responder_finds_the_open_incident_and_acknowledges_it_from_their_own_host() {
    let backend = Backend::start().await;
    let responder = token("acme", "responder");
    let host = host_with_token(&backend, &responder).await;

    let open = call(&host, "list_incidents", json!({"status": "open"})).await;
    let incident = open["incidents"]
        .as_array()
        .and_then(|incidents| incidents.first())
        .unwrap_or_else(|| panic!("the seed leaves an open incident: {open}"))
        .clone();
    let reference = incident["reference"].as_str().unwrap();

    let changed = call(
        &host,
        "acknowledge_incident",
        json!({"incident": reference}),
    )
    .await;
    assert_eq!(changed["changed"], true, "{changed}");
    assert_eq!(changed["status"], "acknowledged", "{changed}");

    // The product itself, asked over its REST API, agrees: the change really happened, by this user.
    let detail: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/incidents/{}",
            backend.url,
            incident["id"].as_str().unwrap()
        ))
        .bearer_auth(&responder)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"], "acknowledged", "{detail}");
    let acknowledgement = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "acknowledged")
        .unwrap_or_else(|| panic!("no acknowledgement in the timeline: {detail}"));
    let me: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/me", backend.url))
        .bearer_auth(&responder)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        acknowledgement["author"]["email"], me["user"]["email"],
        "{detail}"
    );
    host.cancel().await.unwrap();
}

#[tokio::test]
async fn a_viewer_sees_no_write_tools_and_another_organisation_sees_other_services() {
    let backend = Backend::start().await;
    let viewer = host_with_token(&backend, &token("acme", "viewer")).await;
    let tools: Vec<String> = viewer
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    assert!(tools.contains(&"find_services".to_owned()), "{tools:?}");
    for write in [
        "open_incident",
        "acknowledge_incident",
        "resolve_incident",
        "add_incident_note",
    ] {
        assert!(
            !tools.iter().any(|tool| tool == write),
            "a viewer is offered {write}: {tools:?}"
        );
    }

    let names = async |host: &RunningService<RoleClient, ()>| -> Vec<String> {
        let found = call(host, "find_services", json!({})).await;
        found["services"]
            .as_array()
            .unwrap_or_else(|| panic!("{found}"))
            .iter()
            .map(|service| service["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let globex = host_with_token(&backend, &token("globex", "viewer")).await;
    let acme_services = names(&viewer).await;
    let globex_services = names(&globex).await;
    assert!(
        acme_services.contains(&"checkout-api".to_owned()),
        "{acme_services:?}"
    );
    assert!(
        !globex_services.contains(&"checkout-api".to_owned()),
        "{globex_services:?}"
    );
    viewer.cancel().await.unwrap();
    globex.cancel().await.unwrap();
}
