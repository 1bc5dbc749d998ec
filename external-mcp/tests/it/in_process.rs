//! The server in process (its stdio code path over a pipe) with an rmcp client: every read
//! tool against the seeded data, resources, prompts, completion, progress, and who sees which
//! tools.

use external_mcp::config::TokenSource;
use external_mcp::resources::SERVICE_TEMPLATE;
use external_mcp::tools::{WRITE_TOOLS, all_tools};
use rmcp::model::{
    ArgumentInfo, CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams,
    Reference,
};
use serde_json::{Value, json};

use crate::backend::{Backend, SEED_UNTIL, email, token};
use crate::clients::{
    ProgressRecorder, as_user, call, failed, fixed, in_process, in_process_with, ok_call, settings,
    strings, text, tool_names,
};

/// Minutes before the end of the seeded data at which acme's bad deploy of checkout-api lands
/// (one-day windows put it six hours back).
const STORY_DEPLOYED_HOURS_BEFORE_END: i64 = 6;

fn seed_end() -> chrono::DateTime<chrono::Utc> {
    SEED_UNTIL.parse().expect("SEED_UNTIL")
}

#[tokio::test]
async fn find_services_ranks_the_seeded_catalog_by_health_and_pages() {
    let backend = Backend::start().await;
    let client = as_user(&backend, "acme", "viewer").await;

    let all = ok_call(&client, "find_services", json!({ "limit": 50 })).await;
    let names = strings(&all["services"], "name");
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(
        names.contains(&"checkout-api".to_owned())
            && !names.contains(&"shipment-tracker".to_owned())
    );
    let matched = &all["matched"];
    let counted =
        ["critical", "degraded", "healthy"].map(|health| matched[health].as_u64().unwrap_or(0));
    assert_eq!(counted.iter().sum::<u64>(), 20, "{matched}");
    let healths = strings(&all["services"], "health");
    let rank = |health: &str| {
        ["critical", "degraded", "healthy"]
            .iter()
            .position(|h| *h == health)
    };
    assert!(
        healths
            .windows(2)
            .all(|pair| rank(&pair[0]) <= rank(&pair[1])),
        "unhealthy first: {healths:?}"
    );
    // search-api has an open high-severity incident: critical, near the top.
    let search = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "search-api")
        .unwrap();
    assert_eq!(search["health"], "critical");
    assert_eq!(
        search["web_url"],
        "https://monitoring.example.com/services/search-api"
    );
    assert!(!all["truncated"].as_bool().unwrap());

    let first = ok_call(&client, "find_services", json!({ "limit": 8 })).await;
    assert!(first["truncated"].as_bool().unwrap());
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let second = ok_call(
        &client,
        "find_services",
        json!({ "limit": 8, "cursor": cursor }),
    )
    .await;
    let mut paged = strings(&first["services"], "name");
    paged.extend(strings(&second["services"], "name"));
    assert_eq!(
        paged,
        names[..16].to_vec(),
        "pages continue the same ranking"
    );

    let checkout = ok_call(&client, "find_services", json!({ "team": "checkout" })).await;
    assert!(strings(&checkout["services"], "name").contains(&"checkout-api".to_owned()));
    let critical = ok_call(&client, "find_services", json!({ "health": "critical" })).await;
    assert!(
        strings(&critical["services"], "health")
            .iter()
            .all(|health| health == "critical")
    );
    let nothing = ok_call(
        &client,
        "find_services",
        json!({ "query": "no-such-thing" }),
    )
    .await;
    assert!(
        nothing["hint"]
            .as_str()
            .unwrap()
            .contains("No service matches")
    );

    let wrong_cursor = call(&client, "list_alerts", json!({ "cursor": cursor })).await;
    failed(&wrong_cursor, &["cursor", "list_alerts"]);
    let unknown_argument = call(&client, "find_services", json!({ "colour": "red" })).await;
    failed(&unknown_argument, &["colour"]);
}

#[tokio::test]
async fn service_overview_metric_summary_and_deployments_tell_the_bad_deploy_story() {
    let backend = Backend::start().await;
    let client = as_user(&backend, "acme", "viewer").await;

    let overview = call(
        &client,
        "service_overview",
        json!({ "service": "checkout-api" }),
    )
    .await;
    let readable = text(&overview);
    let overview = crate::clients::ok(&overview);
    assert_eq!(overview["name"], "checkout-api");
    assert_eq!(overview["team"], "checkout");
    assert_eq!(strings(&overview["metrics"], "name").len(), 5);
    let versions = strings(&overview["recent_deployments"], "version");
    assert!(
        versions.contains(&"v2.14.0".to_owned()) && versions.contains(&"v2.13.4".to_owned()),
        "{versions:?}"
    );
    assert!(strings(&overview["links"], "title").contains(&"Runbook".to_owned()));
    assert!(
        readable.contains("checkout-api") && readable.contains("Recent deployments"),
        "{readable}"
    );

    let near_miss = call(
        &client,
        "service_overview",
        json!({ "service": "checkout" }),
    )
    .await;
    failed(
        &near_miss,
        &[
            "Could not get the service overview",
            "did you mean checkout-api",
        ],
    );

    let summary = ok_call(
        &client,
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "error_rate", "window": "12h", "end": SEED_UNTIL }),
    )
    .await;
    assert_eq!(summary["unit"], "ratio");
    let points = summary["points"].as_array().unwrap();
    assert!(
        !points.is_empty() && points.len() <= 60,
        "{} points",
        points.len()
    );
    assert_eq!(summary["step_minutes"], 12);
    let max = summary["max"].as_f64().unwrap();
    assert!(max > 0.1, "the spike reaches 18% errors: {summary}");
    assert!(
        summary["avg"].as_f64().unwrap() < max
            && summary["min"].as_f64().unwrap() <= summary["avg"].as_f64().unwrap()
    );
    let peak_at: chrono::DateTime<chrono::Utc> =
        summary["peak"]["at"].as_str().unwrap().parse().unwrap();
    let deployed = seed_end() - chrono::Duration::hours(STORY_DEPLOYED_HOURS_BEFORE_END);
    assert!(
        peak_at >= deployed - chrono::Duration::minutes(12)
            && peak_at <= deployed + chrono::Duration::minutes(60),
        "the peak ({peak_at}) follows the deploy ({deployed})"
    );
    assert!(
        summary["web_url"]
            .as_str()
            .unwrap()
            .contains("/services/checkout-api/metrics/error_rate")
    );

    let now = ok_call(
        &client,
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "error_rate", "window": "1h" }),
    )
    .await;
    assert!(now["points"].as_array().unwrap().is_empty());
    assert!(
        now["hint"].as_str().unwrap().contains("No samples"),
        "{now}"
    );
    let no_metric = call(
        &client,
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "happiness" }),
    )
    .await;
    failed(&no_metric, &["no metric `happiness`", "error_rate"]);
    let bad_window = call(
        &client,
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "error_rate", "window": "5 years" }),
    )
    .await;
    failed(&bad_window, &["`window`"]);

    let rolled_back = ok_call(
        &client,
        "list_deployments",
        json!({ "service": "checkout-api", "status": "rolled_back" }),
    )
    .await;
    assert_eq!(
        strings(&rolled_back["deployments"], "version"),
        vec!["v2.14.0"]
    );
    let deployment = &rolled_back["deployments"][0];
    assert!(
        deployment["web_url"]
            .as_str()
            .unwrap()
            .starts_with("https://monitoring.example.com/services/checkout-api/deployments/")
    );
    let recent = ok_call(
        &client,
        "list_deployments",
        json!({ "since": "2026-01-05T00:00:00Z", "limit": 50 }),
    )
    .await;
    assert!(
        recent["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["started_at"].as_str().unwrap() >= "2026-01-05")
    );
}

#[tokio::test]
async fn alerts_and_incidents_are_listed_and_read_with_their_timeline() {
    let backend = Backend::start().await;
    let client = as_user(&backend, "acme", "viewer").await;

    let incidents = ok_call(&client, "list_incidents", json!({})).await;
    let titles = strings(&incidents["incidents"], "title");
    assert_eq!(titles.len(), 6, "{titles:?}");
    let story = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|incident| incident["title"] == "Checkout failing after v2.14.0 deploy")
        .expect("the story's incident")
        .clone();
    assert_eq!(story["status"], "resolved");
    assert_eq!(story["services"], json!(["checkout-api"]));

    let open = ok_call(&client, "list_incidents", json!({ "status": "open" })).await;
    assert_eq!(
        strings(&open["incidents"], "title"),
        vec!["Search results slow to load"]
    );
    let of_service = ok_call(
        &client,
        "list_incidents",
        json!({ "service": "inventory-service" }),
    )
    .await;
    assert_eq!(
        strings(&of_service["incidents"], "status"),
        vec!["acknowledged"]
    );

    let reference = story["reference"].as_str().unwrap();
    for asked in [
        reference.to_owned(),
        reference.trim_start_matches("INC-").to_owned(),
        story["id"].as_str().unwrap().to_owned(),
    ] {
        let view = ok_call(&client, "get_incident", json!({ "incident": asked })).await;
        assert_eq!(
            view["title"], "Checkout failing after v2.14.0 deploy",
            "asked for {asked}"
        );
        let kinds = strings(&view["timeline"], "kind");
        for kind in ["opened", "acknowledged", "note", "resolved"] {
            assert!(
                kinds.contains(&kind.to_owned()),
                "{kind} missing from {kinds:?}"
            );
        }
        assert!(
            strings(&view["timeline"], "body")
                .iter()
                .any(|body| body == "Rolling back to v2.13.4")
        );
        assert!(!view["alerts"].as_array().unwrap().is_empty());
        assert_eq!(
            view["web_url"],
            format!(
                "https://monitoring.example.com/incidents/{}",
                story["id"].as_str().unwrap()
            )
        );
    }
    let missing = call(&client, "get_incident", json!({ "incident": "INC-999" })).await;
    failed(&missing, &["no incident INC-999"]);
    let nonsense = call(
        &client,
        "get_incident",
        json!({ "incident": "yesterday's" }),
    )
    .await;
    failed(&nonsense, &["INC-42"]);

    let alerts = ok_call(&client, "list_alerts", json!({ "service": "checkout-api" })).await;
    let alerts = alerts["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .all(|alert| alert["service"] == "checkout-api")
    );
    assert!(
        alerts
            .iter()
            .any(|alert| alert["incident_id"] == story["id"]),
        "the spike's alert is linked"
    );
    let firing = ok_call(
        &client,
        "list_alerts",
        json!({ "state": "firing", "limit": 50 }),
    )
    .await;
    assert!(
        strings(&firing["alerts"], "state")
            .iter()
            .all(|state| state == "firing")
    );
    let paged = ok_call(&client, "list_alerts", json!({ "limit": 2 })).await;
    assert_eq!(paged["alerts"].as_array().unwrap().len(), 2);
    let next = ok_call(
        &client,
        "list_alerts",
        json!({ "limit": 2, "cursor": paged["next_cursor"] }),
    )
    .await;
    assert_ne!(paged["alerts"][0]["id"], next["alerts"][0]["id"]);
}

#[tokio::test]
async fn resources_prompts_completion_and_progress_work() {
    let backend = Backend::start().await;
    let recorder = ProgressRecorder::default();
    let client = in_process_with(
        recorder.clone(),
        settings(&backend.url),
        fixed(&token("acme", "responder")),
    )
    .await;

    let listed = client.list_all_resources().await.expect("resources/list");
    assert_eq!(listed.len(), 2);
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("templates");
    assert_eq!(templates.len(), 2);
    let read = |uri: &str| client.read_resource(ReadResourceRequestParams::new(uri));
    let catalog = read("demo://services").await.expect("the catalog");
    let catalog_json = resource_json(&catalog);
    assert_eq!(catalog_json["items"].as_array().unwrap().len(), 20);
    let service = resource_json(
        &read("demo://services/checkout-api")
            .await
            .expect("a service"),
    );
    assert_eq!(service["name"], "checkout-api");
    let open = resource_json(&read("demo://incidents/open").await.expect("open incidents"));
    let references = strings(&open["items"], "reference");
    assert_eq!(references.len(), 2, "one open, one acknowledged: {open}");
    let incident = resource_json(
        &read(&format!("demo://incidents/{}", references[0]))
            .await
            .expect("an incident"),
    );
    assert_eq!(incident["reference"], references[0]);
    assert!(read("demo://nothing").await.is_err());

    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert_eq!(prompts.len(), 2);
    let mut arguments = serde_json::Map::new();
    arguments.insert("incident".into(), Value::String(references[0].clone()));
    let triage = client
        .get_prompt(GetPromptRequestParams::new("triage_incident").with_arguments(arguments))
        .await
        .expect("triage prompt");
    let message = serde_json::to_string(&triage.messages).unwrap();
    assert!(
        message.contains(&references[0]) && message.contains("service_overview"),
        "{message}"
    );
    let mut arguments = serde_json::Map::new();
    arguments.insert("team".into(), Value::String("checkout".into()));
    let report = client
        .get_prompt(GetPromptRequestParams::new("weekly_health_report").with_arguments(arguments))
        .await
        .expect("report prompt");
    assert!(
        serde_json::to_string(&report.messages)
            .unwrap()
            .contains("checkout-api")
    );
    assert!(
        client
            .get_prompt(GetPromptRequestParams::new("triage_incident"))
            .await
            .is_err(),
        "the argument is required"
    );

    let completed = client
        .complete(CompleteRequestParams::new(
            Reference::for_resource(SERVICE_TEMPLATE),
            ArgumentInfo::new("name", "check"),
        ))
        .await
        .expect("completion");
    assert_eq!(completed.completion.values, vec!["checkout-api"]);
    let teams = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("weekly_health_report"),
            ArgumentInfo::new("team", "pay"),
        ))
        .await
        .expect("completion");
    assert_eq!(teams.completion.values, vec!["payments"]);
    let incidents = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("triage_incident"),
            ArgumentInfo::new("incident", ""),
        ))
        .await
        .expect("completion");
    assert_eq!(incidents.completion.values.len(), 2);

    ok_call(&client, "find_services", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let progress = recorder.0.lock().unwrap().clone();
    assert!(
        progress.iter().any(|notification| notification
            .message
            .as_deref()
            .is_some_and(|m| m.contains("read 20 services"))),
        "a catalog scan reports progress: {progress:?}"
    );
}

fn resource_json(result: &rmcp::model::ReadResourceResult) -> Value {
    let contents = serde_json::to_value(&result.contents[0]).expect("contents");
    serde_json::from_str(contents["text"].as_str().expect("text contents")).expect("JSON")
}

#[tokio::test]
async fn writes_are_absent_in_read_only_mode_and_for_a_read_only_token() {
    let backend = Backend::start().await;
    let all: Vec<String> = {
        let mut names: Vec<String> = all_tools()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        names.sort();
        names
    };
    let reads: Vec<String> = all
        .iter()
        .filter(|name| !WRITE_TOOLS.contains(&name.as_str()))
        .cloned()
        .collect();

    let responder = as_user(&backend, "acme", "responder").await;
    assert_eq!(
        tool_names(&responder).await,
        all,
        "a responder sees every tool"
    );

    let mut read_only = settings(&backend.url);
    read_only.read_only = true;
    let client = in_process(read_only, fixed(&token("acme", "responder"))).await;
    assert_eq!(
        tool_names(&client).await,
        reads,
        "--read-only removes the write tools"
    );
    let refused = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("open_incident").with_arguments(
                json!({ "title": "x", "severity": "low" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    assert!(
        refused.is_err(),
        "a write tool does not exist in read-only mode: {refused:?}"
    );

    let viewer = as_user(&backend, "acme", "viewer").await;
    assert_eq!(
        tool_names(&viewer).await,
        reads,
        "a token without `write` sees no write tool"
    );
    let refused = call(
        &viewer,
        "acknowledge_incident",
        json!({ "incident": "INC-1" }),
    )
    .await;
    failed(&refused, &["`write`", "[read]"]);

    let mut only_services = settings(&backend.url);
    only_services.toolsets = vec![external_mcp::config::Toolset::Services];
    let client = in_process(only_services, fixed(&token("acme", "responder"))).await;
    assert_eq!(
        tool_names(&client).await,
        vec!["find_services", "service_overview"]
    );
    assert!(!email("acme", "viewer").is_empty());
}

#[tokio::test]
async fn a_wrong_or_missing_token_still_serves_and_every_tool_says_why() {
    let backend = Backend::start().await;
    let client = in_process(settings(&backend.url), fixed("dmo_not_a_real_token")).await;
    assert_eq!(
        tool_names(&client).await.len(),
        11,
        "the server starts and lists its tools"
    );
    for tool in ["find_services", "list_incidents", "list_alerts"] {
        let result = call(&client, tool, json!({})).await;
        failed(
            &result,
            &[
                &format!("your token was rejected by {}", backend.url),
                "Create a new token",
            ],
        );
    }

    let client = in_process(settings(&backend.url), TokenSource::Fixed(None)).await;
    let result = call(&client, "find_services", json!({})).await;
    failed(&result, &["no API token is configured", "DEMO_API_TOKEN"]);
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let backend = Backend::start().await;
    let directory = std::env::temp_dir().join(format!(
        "external-mcp-it-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("token");
    std::fs::write(&path, "dmo_revoked_long_ago\n").unwrap();
    let client = in_process(settings(&backend.url), TokenSource::File(path.clone())).await;
    failed(
        &call(&client, "find_services", json!({})).await,
        &["your token was rejected"],
    );

    std::fs::write(&path, format!("{}\n", token("acme", "viewer"))).unwrap();
    let services = ok_call(&client, "find_services", json!({})).await;
    assert!(!services["services"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&directory).ok();
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}
