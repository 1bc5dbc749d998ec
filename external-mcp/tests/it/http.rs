//! The Streamable HTTP transport: authentication as an OAuth protected resource, Host and Origin
//! checks, and two users whose interleaved requests never see each other's data.

use serde_json::{Value, json};

use crate::backend::{Backend, closed_port_url, token};
use crate::clients::{
    failed, http_client, http_client_at, http_server, http_server_with, ok_call, settings, strings,
    tool_names,
};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-test","version":"0"}}}"#;

fn post(base: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
}

#[tokio::test]
async fn requests_without_a_valid_token_are_challenged_toward_the_metadata() {
    let backend = Backend::start().await;
    let base = http_server(&backend.url).await;
    let metadata_url = format!("{base}/.well-known/oauth-protected-resource");

    let anonymous = post(&base).body(INITIALIZE).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );

    let wrong = post(&base)
        .bearer_auth("dmo_wrong")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let challenge = wrong.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        !wrong.text().await.unwrap().contains("dmo_wrong"),
        "the token is never echoed"
    );

    let metadata: Value = reqwest::get(&metadata_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], format!("{base}/mcp"));
    assert_eq!(metadata["authorization_servers"], json!([backend.url]));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert_eq!(metadata["scopes_supported"], json!(["read", "write"]));
    let suffixed: Value = reqwest::get(format!("{metadata_url}/mcp"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(suffixed, metadata);

    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    let authorised = post(&base)
        .bearer_auth(token("acme", "viewer"))
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(authorised.status(), 200);
    assert!(
        !authorised.headers().contains_key("mcp-session-id"),
        "no session state: nothing to stick to one replica"
    );
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let backend = Backend::start().await;
    let base = http_server(&backend.url).await;
    let viewer = token("acme", "viewer");
    let port = base.rsplit(':').next().unwrap().to_owned();

    let rebinding = post(&base)
        .bearer_auth(&viewer)
        .header("Host", format!("evil.example.com:{port}"))
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 403);
    let metadata = reqwest::Client::new()
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .header("Host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 403);

    let cross_site = post(&base)
        .bearer_auth(&viewer)
        .header("Origin", "https://evil.example.com")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let same_site = post(&base)
        .bearer_auth(&viewer)
        .header("Origin", format!("http://localhost:{port}"))
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), 200);
}

/// Two users of two organisations, their calls interleaved on one server: each sees only their
/// own organisation.
#[tokio::test]
async fn two_users_interleaved_never_see_each_others_data() {
    let backend = Backend::start().await;
    let base = http_server(&backend.url).await;
    let acme = http_client(&base, &token("acme", "viewer")).await;
    let globex = http_client(&base, &token("globex", "responder")).await;

    assert_eq!(
        tool_names(&acme).await.len(),
        7,
        "acme's viewer cannot write"
    );
    assert_eq!(
        tool_names(&globex).await.len(),
        11,
        "globex's responder can"
    );

    for _ in 0..3 {
        let (acme_services, globex_services, acme_incidents, globex_incidents) = tokio::join!(
            ok_call(&acme, "find_services", json!({ "limit": 50 })),
            ok_call(&globex, "find_services", json!({ "limit": 50 })),
            ok_call(&acme, "list_incidents", json!({})),
            ok_call(&globex, "list_incidents", json!({})),
        );
        let acme_names = strings(&acme_services["services"], "name");
        let globex_names = strings(&globex_services["services"], "name");
        assert!(
            acme_names.contains(&"checkout-api".into())
                && !acme_names.contains(&"shipment-tracker".into())
        );
        assert!(
            globex_names.contains(&"shipment-tracker".into())
                && !globex_names.contains(&"checkout-api".into())
        );
        let acme_titles = strings(&acme_incidents["incidents"], "title");
        let globex_titles = strings(&globex_incidents["incidents"], "title");
        assert!(
            acme_titles.contains(&"Checkout failing after v2.14.0 deploy".into()),
            "{acme_titles:?}"
        );
        assert!(
            !acme_titles
                .iter()
                .any(|title| globex_titles.contains(title)),
            "{acme_titles:?} / {globex_titles:?}"
        );
    }
    // globex's incident is not reachable by acme, even by id.
    let globex_incidents = ok_call(&globex, "list_incidents", json!({ "limit": 1 })).await;
    let globex_id = globex_incidents["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result =
        crate::clients::call(&acme, "get_incident", json!({ "incident": globex_id })).await;
    failed(&result, &["Could not get the incident"]);
}

#[tokio::test]
async fn over_http_a_backend_that_is_down_is_a_clear_service_unavailable() {
    let base = http_server(&closed_port_url()).await;
    let response = post(&base)
        .bearer_auth("dmo_any")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the API"),
        "{body}"
    );
}

/// One client's requests alternate between two separate server instances (replicas behind a
/// load balancer without sticky sessions): no request carries a session id, and each works.
#[tokio::test]
async fn two_replicas_serve_alternating_requests_of_one_client() {
    let backend = Backend::start().await;
    let replicas = [
        http_server(&backend.url).await,
        http_server(&backend.url).await,
    ];
    let viewer = token("acme", "viewer");
    let requests = [
        INITIALIZE.to_owned(),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"find_services","arguments":{"query":"checkout-api"}}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list_incidents","arguments":{"limit":1}}}"#.to_owned(),
    ];
    for (index, body) in requests.iter().enumerate() {
        let replica = &replicas[index % 2];
        let response = post(replica)
            .bearer_auth(&viewer)
            .header("mcp-protocol-version", "2025-06-18")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "request {index} on replica {}: {}",
            index % 2,
            response.status()
        );
        assert!(!response.headers().contains_key("mcp-session-id"));
        if body.contains(r#""id""#) {
            let answer: Value = response.json().await.unwrap();
            assert!(answer.get("error").is_none(), "request {index}: {answer}");
            if body.contains("tools/call") {
                assert_ne!(
                    answer["result"]["isError"], true,
                    "request {index}: {answer}"
                );
                assert!(
                    answer["result"]["structuredContent"].is_object(),
                    "{answer}"
                );
            }
            if body.contains("tools/list") {
                assert_eq!(answer["result"]["tools"].as_array().map(Vec::len), Some(7));
            }
        }
    }
    // The real rmcp client works against either replica as well.
    for replica in &replicas {
        let client = http_client(replica, &viewer).await;
        ok_call(&client, "list_alerts", json!({ "limit": 1 })).await;
    }
}

/// `/mcp/readonly` and `/mcp/x/{toolset}` narrow the tools, like GitHub's remote server; they never
/// widen what the launch flags allow.
#[tokio::test]
async fn endpoints_narrow_the_tool_list_and_never_widen_it() {
    let backend = Backend::start().await;
    let base = http_server(&backend.url).await;
    let responder = token("acme", "responder");
    let names = async |path: &str| {
        tool_names(&http_client_at(&format!("{base}{path}"), &responder).await).await
    };
    assert_eq!(names("/mcp").await.len(), 11);
    let read_only = names("/mcp/readonly").await;
    assert_eq!(read_only.len(), 7, "{read_only:?}");
    assert!(
        read_only
            .iter()
            .all(|name| !external_mcp::tools::WRITE_TOOLS.contains(&name.as_str())),
        "{read_only:?}"
    );
    assert_eq!(
        names("/mcp/x/incidents").await,
        [
            "acknowledge_incident",
            "add_incident_note",
            "get_incident",
            "list_incidents",
            "open_incident",
            "resolve_incident"
        ]
    );
    assert_eq!(
        names("/mcp/x/incidents/readonly").await,
        ["get_incident", "list_incidents"]
    );
    assert_eq!(names("/mcp/x/metrics").await, ["metric_summary"]);

    // A tool outside the endpoint's set does not exist there.
    let incidents_only = http_client_at(&format!("{base}/mcp/x/incidents"), &responder).await;
    let outside = incidents_only
        .call_tool(rmcp::model::CallToolRequestParams::new("find_services"))
        .await;
    assert!(outside.is_err(), "{outside:?}");
    let inside = ok_call(&incidents_only, "list_incidents", json!({ "limit": 1 })).await;
    assert!(inside["incidents"].is_array());
    for missing in ["/mcp/x/bogus", "/mcp/x", "/mcp/writable"] {
        let response = reqwest::Client::new()
            .post(format!("{base}{missing}"))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .bearer_auth(&responder)
            .body(INITIALIZE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }

    // Launched read-only with two toolsets: no URL brings back a write tool or another toolset.
    let mut launch = settings(&backend.url);
    launch.read_only = true;
    launch.toolsets = vec![
        external_mcp::config::Toolset::Alerts,
        external_mcp::config::Toolset::Incidents,
    ];
    let narrow = http_server_with(launch).await;
    let narrow_names = async |path: &str| {
        tool_names(&http_client_at(&format!("{narrow}{path}"), &responder).await).await
    };
    assert_eq!(
        narrow_names("/mcp").await,
        ["get_incident", "list_alerts", "list_incidents"]
    );
    assert_eq!(
        narrow_names("/mcp/x/incidents").await,
        ["get_incident", "list_incidents"]
    );
    let absent = reqwest::Client::new()
        .post(format!("{narrow}/mcp/x/services"))
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .bearer_auth(&responder)
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        absent.status(),
        404,
        "a toolset the launch left out has no URL"
    );
}

/// The API's refusal text may hold any character; the 401 still carries `WWW-Authenticate`
/// (a header value cannot hold non-ASCII text, and the challenge used to be dropped).
#[tokio::test]
async fn a_rejection_with_non_ascii_text_still_carries_the_challenge() {
    let api = refusing_api("jeton refusé — expiré depuis «hier»").await;
    let base = http_server(&api).await;
    let response = post(&base)
        .bearer_auth("dmo_expired")
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate is present")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(challenge.contains("jeton refus"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("jeton refusé — expiré"),
        "the body keeps the text as it was: {body}"
    );
}

/// A stand-in for the API that refuses every token with `detail`, as a problem+json 401.
async fn refusing_api(detail: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            json!({ "type": "about:blank", "title": "Unauthorized", "status": 401, "detail": detail, "code": "invalid_token" })
                .to_string(),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A token revoked while its validation is still cached: the tool call that meets the API's 401
/// says so, and the token is forgotten at once, so the very next request is challenged (401)
/// instead of riding the cache for the rest of its minute.
#[tokio::test]
async fn a_token_revoked_mid_use_is_forgotten_after_the_first_refusal() {
    let backend = Backend::start().await;
    let base = http_server(&backend.url).await;
    let viewer = token("acme", "viewer");
    let client = http_client(&base, &viewer).await;
    ok_call(&client, "list_alerts", json!({ "limit": 1 })).await;

    let revoked = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(&viewer)
    .execute(&backend.database.pool)
    .await
    .unwrap();
    assert_eq!(revoked.rows_affected(), 1);

    let refused = crate::clients::call(&client, "list_alerts", json!({ "limit": 1 })).await;
    failed(
        &refused,
        &["Could not list alerts", "your token was rejected"],
    );
    let next = post(&base)
        .bearer_auth(&viewer)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 401, "the rejected token was forgotten");
    assert!(next.headers().contains_key("www-authenticate"));
}
