//! The MCP client against the real internal-mcp: credentials name the user and carry the
//! correlation id into internal-mcp's audit trail, annotations drive the read-only flag, tool
//! errors are results, and an unreachable server is a transport error.

use internal_host::{AppState, Error};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::support::{
    host_config, seeded_database, spawn_internal_mcp, spawn_internal_mcp_trusting, user,
};

fn arguments(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other} is not an object"),
    }
}

#[tokio::test]
async fn calls_reach_internal_mcp_as_the_user_with_the_correlation_id() {
    let database = seeded_database().await;
    let (url, internal_mcp) = spawn_internal_mcp(&database).await;
    let state = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts");
    let marcus = user(&database.pool, "acme", "marcus").await;
    let correlation_id = Uuid::new_v4();
    let session = state
        .internal_mcp()
        .connect(&marcus, correlation_id)
        .await
        .expect("a session");

    let tools = session.tools().await.expect("the tools");
    let read_only = |name: &str| {
        tools
            .iter()
            .find(|tool| tool.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"))
            .read_only
    };
    assert!(read_only("run_select"));
    assert!(!read_only("annotate_incident"));
    assert!(!read_only("acknowledge_service_alerts"));
    assert!(read_only("correlate_incident"));

    let outcome = session
        .call(
            "run_select",
            arguments(json!({"sql": "SELECT count(*) AS incidents FROM incidents"})),
        )
        .await
        .expect("the call");
    assert!(!outcome.is_error, "{}", outcome.text);
    assert!(!outcome.truncated);
    assert!(outcome.structured.is_some());

    let refused = session
        .call(
            "run_select",
            arguments(json!({"sql": "DELETE FROM incidents"})),
        )
        .await
        .expect("a tool error is a result, not a transport failure");
    assert!(refused.is_error, "{}", refused.text);
    session.close().await;

    internal_mcp.write_audit_records().await;
    let audited: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, tool FROM internal_mcp_audit_log
          WHERE credential_id LIKE $1 || '/%' ORDER BY id",
    )
    .bind(correlation_id.to_string())
    .fetch_all(&database.pool)
    .await
    .expect("the audit rows");
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(
        audited
            .iter()
            .all(|(user_id, tool)| *user_id == marcus.user_id && tool == "run_select")
    );
}

#[tokio::test]
async fn long_results_are_capped_for_the_model() {
    let database = seeded_database().await;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let mut config = host_config(&database, &url);
    config.mcp_limits.max_result_chars = 1_000;
    let state = AppState::connect(config).await.expect("the host starts");
    let sam = user(&database.pool, "acme", "sam").await;
    let session = state
        .internal_mcp()
        .connect(&sam, Uuid::new_v4())
        .await
        .expect("a session");
    let outcome = session
        .call(
            "run_select",
            arguments(json!({"sql": "SELECT repeat('x', 5000) AS long_text"})),
        )
        .await
        .expect("the call");
    assert!(outcome.truncated, "{} chars", outcome.full_chars);
    assert_eq!(outcome.text.chars().count(), 1_000);
    assert!(outcome.full_chars > 1_000);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let database = seeded_database().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/mcp", listener.local_addr().expect("an address"));
    drop(listener);
    let state = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts without internal-mcp");
    let sam = user(&database.pool, "acme", "sam").await;
    match state.internal_mcp().connect(&sam, Uuid::new_v4()).await {
        Err(Error::McpTransport { server, .. }) => assert_eq!(server, "internal-mcp"),
        Err(other) => panic!("expected a transport error, got {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[tokio::test]
async fn a_credential_for_a_user_of_another_organisation_is_refused() {
    let database = seeded_database().await;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let state = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts");
    let mut sam = user(&database.pool, "acme", "sam").await;
    sam.organization_id = Uuid::new_v4();
    assert!(matches!(
        state.internal_mcp().connect(&sam, Uuid::new_v4()).await,
        Err(Error::McpTransport { .. })
    ));
}

/// The host signs with its own Ed25519 key: internal-mcp, holding only the public half (no shared
/// key at all), accepts its credentials, and refuses those of a key it does not know.
#[tokio::test]
async fn an_ed25519_key_of_the_hosts_own_is_verified_with_its_public_half_only() {
    use internal_host::config::CredentialKey;
    use internal_mcp::config::CredentialPolicy;
    use internal_mcp::keys::{PrivateKey, PublicKeySet};

    let database = seeded_database().await;
    let host_key = PrivateKey::generate("internal-host-test").expect("a key pair");
    let jwks = json!({ "keys": [host_key.public_jwk()] }).to_string();
    let public_keys = PublicKeySet::from_jwks(&jwks).expect("a key set");
    let (url, _stop) =
        spawn_internal_mcp_trusting(&database, CredentialPolicy::from_keys(None, public_keys))
            .await;
    let sam = user(&database.pool, "acme", "sam").await;

    let mut config = host_config(&database, &url);
    config.credential_key =
        CredentialKey::ed25519_from_pem("internal-host-test", &host_key.to_pem()).expect("the key");
    let state = AppState::connect(config).await.expect("the host starts");
    let session = state
        .internal_mcp()
        .connect(&sam, Uuid::new_v4())
        .await
        .expect("a session with an EdDSA credential");
    let outcome = session
        .call("run_select", arguments(json!({"sql": "SELECT 1 AS one"})))
        .await
        .expect("the call");
    assert!(!outcome.is_error, "{}", outcome.text);
    session.close().await;

    // Another key under the same kid, and the tests' shared key: both refused.
    let impostor = PrivateKey::generate("internal-host-test").expect("a key pair");
    for key in [
        CredentialKey::ed25519_from_pem("internal-host-test", &impostor.to_pem()).expect("the key"),
        crate::support::signing_key(),
    ] {
        let mut config = host_config(&database, &url);
        config.credential_key = key;
        let state = AppState::connect(config).await.expect("the host starts");
        assert!(matches!(
            state.internal_mcp().connect(&sam, Uuid::new_v4()).await,
            Err(Error::McpTransport { .. })
        ));
    }
    // Text that is no Ed25519 key is refused at start-up.
    assert!(CredentialKey::ed25519_from_pem("k", "not a key").is_err());
}
