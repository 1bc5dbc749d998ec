//! Who may call: only a valid service credential gets past the front door; everything else is a
//! 401 with a reason, on every endpoint, before any tool runs. Nothing falls back to anonymous.

use base64::Engine as _;
use chrono::Utc;
use internal_mcp::auth::sign_claims;
use internal_mcp::config::{Endpoint, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, TestUser, signing_key};

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
    let mut request = reqwest::Client::new()
        .post(app.url(endpoint))
        .header("Accept", "application/json, text/event-stream")
        .json(&initialize());
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

/// A server holding only public keys: EdDSA credentials by kid get in, a single-use one only
/// once, and HS256 ones (which anything holding a shared key could mint) are refused.
#[tokio::test]
async fn public_keys_only_accept_eddsa_by_kid_and_refuse_a_replayed_single_use_credential() {
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

    let once = mint_ed25519_credential(&host_key, &request(true)).unwrap();
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&once))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&once))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("single-use and was already used"), "{body}");

    let shared = app.credential(&sam);
    let (status, body, _) = post(&app, Endpoint::All, Some(&bearer(&shared))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("only EdDSA"), "{body}");
}
