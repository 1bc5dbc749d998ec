//! Who may call: only a valid service credential gets past the front door; everything else is a
//! 401 with a reason, on every endpoint, before any tool runs. Nothing falls back to anonymous.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use internal_mcp::auth::sign_claims;
use internal_mcp::config::{Endpoint, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, TestUser, call, client_at, failure, signing_key, success};

/// A JSON-RPC initialize request, as a client's first POST.
fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    })
}

/// Posts an initialize request with `authorization` (if any) and returns the status and body.
async fn post(
    app: &TestApp,
    endpoint: Endpoint,
    authorization: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    post_message(app, endpoint, authorization, &initialize()).await
}

/// POSTs one JSON-RPC `message`: the status, the body and the `WWW-Authenticate` challenge.
async fn post_message(
    app: &TestApp,
    endpoint: Endpoint,
    authorization: Option<&str>,
    message: &Value,
) -> (StatusCode, String, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(app.url(endpoint))
        .header("Accept", "application/json, text/event-stream")
        .json(message);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.send().await.expect("a response");
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, response.text().await.unwrap_or_default(), challenge)
}

fn claims(user: &TestUser, changes: &Value) -> Value {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "iss": "internal-host", "sub": user.id, "aud": "internal-mcp", "org": user.organization_id,
        "role": "admin", "iat": now, "exp": now + 300, "jti": Uuid::new_v4().to_string(),
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 with a challenge and `reason` in the body, on every endpoint.
async fn check_refused(app: &TestApp, authorization: Option<&str>, reason: &str) {
    for endpoint in Endpoint::EVERY {
        let (status, body, challenge) = post(app, endpoint, authorization).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{endpoint:?} {authorization:?}: {body}"
        );
        assert!(
            body.contains(reason),
            "{endpoint:?}: {body:?} should say {reason:?}"
        );
        let challenge = challenge.expect("a WWW-Authenticate header");
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("invalid_token"),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn bad_credentials_get_401_with_a_reason() {
    let app = TestApp::spawn().await;
    let dana = app.user("acme", "dana").await;
    let key = signing_key();
    let sign = |claims: Value| sign_claims(&key, &claims).unwrap();

    check_refused(&app, None, "a service credential is required").await;
    check_refused(&app, Some("Basic ZGFuYTpzZWNyZXQ="), "Bearer scheme").await;
    check_refused(&app, Some("Bearer "), "Bearer scheme").await;
    check_refused(&app, Some("Bearer not-a-jwt"), "malformed").await;

    let now = Utc::now().timestamp();
    let expired = sign(claims(&dana, &json!({"iat": now - 900, "exp": now - 600})));
    check_refused(&app, Some(&bearer(&expired)), "expired").await;

    let forger = SigningKey::new(b"somebody else's key, also 32+ bytes".to_vec()).unwrap();
    let forged = sign_claims(&forger, &claims(&dana, &json!({}))).unwrap();
    check_refused(&app, Some(&bearer(&forged)), "signature does not verify").await;

    let wrong_audience = sign(claims(&dana, &json!({"aud": "external-mcp"})));
    check_refused(
        &app,
        Some(&bearer(&wrong_audience)),
        "aud must be internal-mcp",
    )
    .await;

    let no_audience = sign(claims(&dana, &json!({"aud": null})));
    check_refused(&app, Some(&bearer(&no_audience)), "aud").await;

    let untrusted = sign(claims(&dana, &json!({"iss": "somebody"})));
    check_refused(&app, Some(&bearer(&untrusted)), "issuer").await;

    let too_long = sign(claims(&dana, &json!({"exp": now + 3600})));
    check_refused(&app, Some(&bearer(&too_long)), "longer than").await;

    let unknown_user = sign(claims(&dana, &json!({"sub": Uuid::new_v4()})));
    check_refused(&app, Some(&bearer(&unknown_user)), "not a member").await;

    // A real user, named with another organisation: refused, not re-scoped.
    let globex = app.organization_id("globex").await;
    let other_organisation = sign(claims(&dana, &json!({"org": globex})));
    check_refused(&app, Some(&bearer(&other_organisation)), "not a member").await;

    // alg none: a header that claims no signature, and no signature.
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(json!({"alg": "none", "typ": "JWT"})),
        encode(claims(&dana, &json!({})))
    );
    check_refused(&app, Some(&bearer(&unsigned)), "HS256").await;

    // Another algorithm with the same key is refused before its signature is looked at.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(&dana, &json!({})),
        &jsonwebtoken::EncodingKey::from_secret(b"internal-mcp test signing key, 32+ bytes long"),
    )
    .unwrap();
    check_refused(&app, Some(&bearer(&hs512)), "only EdDSA").await;

    // The rmcp client cannot even initialise with a bad credential.
    assert!(app.client_with(Endpoint::All, &expired).await.is_err());
}

#[tokio::test]
async fn a_valid_credential_gets_in_and_the_role_is_capped_by_the_users() {
    let app = TestApp::spawn().await;
    let sam = app.user("acme", "sam").await;
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&app.credential(&sam)))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A viewer whose credential claims admin is served as a viewer.
    let inflated = sign_claims(&signing_key(), &claims(&sam, &json!({"role": "admin"}))).unwrap();
    let client = app
        .client_with(Endpoint::All, &inflated)
        .await
        .expect("the client connects");
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        tools
            .iter()
            .all(|tool| tool.name != "acknowledge_service_alerts" && tool.name != "audit_log")
    );

    // The health check needs no credential and says nothing else.
    let health = reqwest::get(format!("http://{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_even_with_a_credential() {
    let app = TestApp::spawn().await;
    let sam = app.user("acme", "sam").await;
    let response = reqwest::Client::new()
        .post(app.url(Endpoint::All))
        .header("Host", "attacker.example")
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(app.credential(&sam))
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// A server holding only public keys: EdDSA credentials by kid get in, a single-use one acts
/// only once (after setting up a session with it), and HS256 ones (which anything holding a
/// shared key could mint) are refused.
#[tokio::test]
async fn public_keys_only_accept_eddsa_by_kid_and_a_single_use_credential_acts_once() {
    use internal_mcp::auth::{CredentialRequest, mint_ed25519_credential};
    use internal_mcp::keys::{PrivateKey, PublicKeySet};

    let host_key = PrivateKey::generate("internal-host-2026").unwrap();
    let jwks = json!({ "keys": [host_key.public_jwk()] }).to_string();
    let app = TestApp::spawn_with(|config| {
        config.credentials.signing_key = None;
        config.credentials.public_keys = PublicKeySet::from_jwks(&jwks).unwrap();
    })
    .await;
    let sam = app.user("acme", "sam").await;
    let request = |single_use| CredentialRequest {
        issuer: "internal-host".into(),
        user_id: sam.id,
        organization_id: sam.organization_id,
        role: sam.role,
        lifetime: std::time::Duration::from_secs(120),
        single_use,
    };

    let reusable = mint_ed25519_credential(&host_key, &request(false)).unwrap();
    for _ in 0..2 {
        let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&reusable))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // A single-use credential: an MCP client connects and lists the tools with it (setting up
    // spends nothing), then makes the one call it is for.
    let once = mint_ed25519_credential(&host_key, &request(true)).unwrap();
    let client = client_at(&app.url(Endpoint::All), &once).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|tool| tool.name == "run_select"));
    let one = success(&call(&client, "run_select", json!({"sql": "SELECT 1 AS one"})).await);
    assert_eq!(one["rows"], json!([[1]]));
    // Replayed: setting up still answers, acting does not.
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&once))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let replayed_call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_select", "arguments": {"sql": "SELECT 2 AS two"}}
    });
    let (status, body, _) =
        post_message(&app, Endpoint::All, Some(&bearer(&once)), &replayed_call).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("single-use and was already used"), "{body}");
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM internal_mcp_used_credentials")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(used, 1, "one credential was spent, once");

    // A message that does not name a set-up method spends a fresh single-use credential, as
    // does an unknown one.
    for message in [
        json!({"jsonrpc": "2.0", "id": 3}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/lists"}),
    ] {
        let fresh = mint_ed25519_credential(&host_key, &request(true)).unwrap();
        post_message(&app, Endpoint::All, Some(&bearer(&fresh)), &message).await;
        let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&fresh))).await;
        assert_eq!(status, StatusCode::OK, "setting up never spends: {body}");
        let (status, _, _) =
            post_message(&app, Endpoint::All, Some(&bearer(&fresh)), &replayed_call).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{message} spent it");
    }

    let shared = app.credential(&sam);
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&shared))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("only EdDSA"), "{body}");
}

#[tokio::test]
async fn a_demoted_users_credential_loses_its_power_once_the_change_commits() {
    let app = TestApp::spawn().await;
    let dana = app.user("acme", "dana").await;
    let client = app.client(Endpoint::Incidents, "acme", "dana").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !app.state.roles().is_listening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the roles' listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read twice: the second call is served from the roles kept in memory.
    for _ in 0..2 {
        success(&call(&client, "audit_log", json!({"limit": 1})).await);
    }
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|tool| tool.name == "audit_log"));

    sqlx::query("UPDATE users SET role = 'viewer' WHERE id = $1")
        .bind(dana.id)
        .execute(app.pool())
        .await
        .unwrap();
    // The notification arrives moments after the commit; the same credential is then a viewer's.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let result = call(&client, "audit_log", json!({"limit": 1})).await;
        if result.is_error == Some(true) {
            assert!(failure(&result).contains("admin"), "{result:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dana was still served as an admin 5 s after her demotion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().all(|tool| tool.name != "audit_log"));
}

/// A trigger that tells of users' changes disabled while the server runs: within one check
/// period the server stops keeping roles, so a demotion the trigger no longer reports still
/// counts on the next call.
#[tokio::test]
async fn a_trigger_disabled_while_the_server_runs_stops_roles_being_kept() {
    use internal_mcp::roles::TRIGGERS_CHECKED_EVERY;

    let app = TestApp::spawn().await;
    let dana = app.user("acme", "dana").await;
    let client = app.client(Endpoint::Incidents, "acme", "dana").await;
    let listening_within = |listening: bool, within: Duration| {
        let roles = app.state.roles().clone();
        async move {
            let deadline = std::time::Instant::now() + within;
            while roles.is_listening() != listening {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the roles' listener was not {} within {within:?}",
                    if listening { "listening" } else { "stopped" }
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    listening_within(true, Duration::from_secs(5)).await;
    success(&call(&client, "audit_log", json!({"limit": 1})).await);

    sqlx::query("ALTER TABLE users DISABLE TRIGGER internal_mcp_user_changed")
        .execute(app.pool())
        .await
        .unwrap();
    listening_within(false, TRIGGERS_CHECKED_EVERY + Duration::from_secs(5)).await;
    // No notification comes now; the role is read from the table.
    sqlx::query("UPDATE users SET role = 'viewer' WHERE id = $1")
        .bind(dana.id)
        .execute(app.pool())
        .await
        .unwrap();
    let result = call(&client, "audit_log", json!({"limit": 1})).await;
    assert!(failure(&result).contains("admin"), "{result:?}");

    // Enabled again, the listener is back within a check period.
    sqlx::query("ALTER TABLE users ENABLE TRIGGER internal_mcp_user_changed")
        .execute(app.pool())
        .await
        .unwrap();
    listening_within(true, TRIGGERS_CHECKED_EVERY + Duration::from_secs(5)).await;
}
