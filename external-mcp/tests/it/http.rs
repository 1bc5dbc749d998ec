//! The Streamable HTTP transport: authentication as an OAuth protected resource, Host and Origin
//! checks, and two users whose interleaved requests never see each other's data.

use serde_json::{Value, json};

use crate::backend::{Backend, closed_port_url, token};
use crate::clients::{failed, http_client, http_server, ok_call, strings, tool_names};

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
    assert!(authorised.headers().contains_key("mcp-session-id"));
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
/// own organisation, and one cannot ride the other's session.
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

    // A session opened by acme is refused to globex's token.
    let opened = post(&base)
        .bearer_auth(token("acme", "viewer"))
        .body(INITIALIZE)
        .send()
        .await
        .unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let hijack = post(&base)
        .bearer_auth(token("globex", "responder"))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);
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
