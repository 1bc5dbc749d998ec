//! One server or several: the unified endpoint serves every capability, each component endpoint
//! only its own; `tools/list` follows the caller's role; configuration decides what is mounted.

use internal_mcp::config::Endpoint;
use rmcp::model::ReadResourceRequestParams;
use serde_json::json;

use crate::support::{TestApp, call, success};

async fn tool_names(app: &TestApp, endpoint: Endpoint, slug: &str, handle: &str) -> Vec<String> {
    let client = app.client(endpoint, slug, handle).await;
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_unified_endpoint_lists_what_the_callers_role_allows() {
    let app = TestApp::spawn().await;
    let everything = [
        "acknowledge_service_alerts",
        "annotate_incident",
        "audit_log",
        "correlate_incident",
        "describe_table",
        "detect_anomalies",
        "explain_select",
        "get_incident",
        "incident_alerts",
        "list_incidents_opened_since",
        "list_tables",
        "noisy_alert_rules",
        "run_select",
        "silence_monitor",
        "slo_burn",
        "transition_incident",
    ];
    assert_eq!(
        tool_names(&app, Endpoint::All, "acme", "dana").await,
        everything
    );
    let responder: Vec<&str> = everything
        .iter()
        .copied()
        .filter(|name| *name != "audit_log")
        .collect();
    assert_eq!(
        tool_names(&app, Endpoint::All, "acme", "marcus").await,
        responder
    );
    let viewer = [
        "correlate_incident",
        "describe_table",
        "detect_anomalies",
        "explain_select",
        "get_incident",
        "incident_alerts",
        "list_incidents_opened_since",
        "list_tables",
        "noisy_alert_rules",
        "run_select",
        "slo_burn",
    ];
    assert_eq!(tool_names(&app, Endpoint::All, "acme", "sam").await, viewer);
}

#[tokio::test]
async fn component_endpoints_list_only_their_tools() {
    let app = TestApp::spawn().await;
    assert_eq!(
        tool_names(&app, Endpoint::Sql, "acme", "dana").await,
        [
            "describe_table",
            "explain_select",
            "list_tables",
            "run_select"
        ]
    );
    assert_eq!(
        tool_names(&app, Endpoint::Metrics, "acme", "dana").await,
        ["detect_anomalies", "noisy_alert_rules", "slo_burn"]
    );
    assert_eq!(
        tool_names(&app, Endpoint::Incidents, "acme", "dana").await,
        [
            "acknowledge_service_alerts",
            "annotate_incident",
            "audit_log",
            "correlate_incident",
            "get_incident",
            "incident_alerts",
            "list_incidents_opened_since",
            "silence_monitor",
            "transition_incident"
        ]
    );
    // A tool of another component is not there to call.
    let sql = app.client(Endpoint::Sql, "acme", "dana").await;
    let arguments = json!({"service": "checkout-api"})
        .as_object()
        .cloned()
        .unwrap();
    let refused = sql
        .call_tool(rmcp::model::CallToolRequestParams::new("slo_burn").with_arguments(arguments))
        .await;
    assert!(
        refused.is_err(),
        "slo_burn must not be callable on /mcp/sql"
    );
    // The component endpoint works for its own tools.
    let metrics = app.client(Endpoint::Metrics, "acme", "sam").await;
    let burn = success(&call(&metrics, "slo_burn", json!({"service": "checkout-api"})).await);
    assert_eq!(burn["service"], "checkout-api");
}

#[tokio::test]
async fn the_schema_is_offered_as_resources_on_sql_endpoints_only() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let resources = client.list_all_resources().await.expect("resources/list");
    assert_eq!(
        resources
            .iter()
            .map(|resource| resource.uri.as_str())
            .collect::<Vec<_>>(),
        ["schema://tables"]
    );
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("resources/templates/list");
    assert_eq!(templates[0].uri_template, "schema://table/{name}");

    let tables = client
        .read_resource(ReadResourceRequestParams::new("schema://tables"))
        .await
        .expect("schema://tables");
    let text = match &tables.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    let tables: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|table| table["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"metric_samples") && names.contains(&"alerts"),
        "{names:?}"
    );
    for hidden in [
        "api_tokens",
        "idempotency_keys",
        "internal_mcp_audit_log",
        "internal_mcp_confirmations",
        "_sqlx_migrations",
    ] {
        assert!(!names.contains(&hidden), "{hidden} must not be listed");
    }
    let samples = client
        .read_resource(ReadResourceRequestParams::new(
            "schema://table/metric_samples",
        ))
        .await
        .expect("schema://table/metric_samples");
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &samples.contents[0]
    else {
        panic!("text")
    };
    assert!(
        text.contains("series_id") && text.contains("Raw per-minute samples"),
        "{text}"
    );
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("schema://table/api_tokens"))
            .await
            .is_err()
    );

    let metrics = app.client(Endpoint::Metrics, "acme", "sam").await;
    assert!(
        metrics
            .peer_info()
            .unwrap()
            .capabilities
            .resources
            .is_none()
    );
}

#[tokio::test]
async fn configuration_decides_which_endpoints_are_mounted() {
    let app = TestApp::spawn_with(|config| config.endpoints = vec![Endpoint::Sql]).await;
    let user = app.user("acme", "sam").await;
    let credential = app.credential(&user);
    assert!(app.client_with(Endpoint::Sql, &credential).await.is_ok());
    assert!(app.client_with(Endpoint::All, &credential).await.is_err());
    assert!(
        app.client_with(Endpoint::Metrics, &credential)
            .await
            .is_err()
    );
    let status = reqwest::Client::new()
        .post(app.url(Endpoint::All))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schema_tools_describe_tables_with_comments_and_estimates() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::All, "acme", "sam").await;
    let tables = success(&call(&client, "list_tables", json!({})).await);
    let services = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|table| table["name"] == "services")
        .unwrap();
    assert!(
        services["comment"]
            .as_str()
            .unwrap()
            .contains("service catalog")
    );
    let estimate = services["estimated_rows"].as_f64().unwrap();
    assert!(estimate >= 1.0, "{estimate}");

    let alerts = success(&call(&client, "describe_table", json!({"table": "alerts"})).await);
    let columns = alerts["columns"].as_array().unwrap();
    let state = columns
        .iter()
        .find(|column| column["name"] == "state")
        .unwrap();
    assert_eq!(state["type"], "alert_state");
    assert_eq!(state["enum_values"], json!(["firing", "resolved"]));
    let labels = columns
        .iter()
        .find(|column| column["name"] == "labels")
        .unwrap();
    assert!(
        labels["comment"]
            .as_str()
            .unwrap()
            .contains("labels->>'team'")
    );
    assert!(
        alerts["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|index| index.as_str().unwrap().contains("alerts_by_service"))
    );

    let unknown = call(&client, "describe_table", json!({"table": "api_tokens"})).await;
    assert!(crate::support::failure(&unknown).contains("no readable table"));
}
