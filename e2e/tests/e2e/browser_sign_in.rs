//! A person signs in with the product in a real headless Chromium: the real demo-backend binary's
//! authorization server, its sign-in and consent pages as a browser renders and submits them, and a
//! redirect back to a client's callback. What the browser ends up holding is a code that the client
//! (this test) redeems with its PKCE verifier for a token the API accepts as that person's.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use demo_backend::domain::tokens;
use serde_json::{Value, json};
use test_harness::backend::{self, Backend};
use test_harness::browser::Browser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A client's redirect endpoint: answers every request with a small page and hands the request's
/// path and query to the test.
async fn callback_endpoint() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 8192];
            let read = stream.read(&mut head).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..read]).into_owned();
            if let Some(target) = head.split_whitespace().nth(1) {
                let _ = sender.send(target.to_owned());
            }
            let page = "<!doctype html><title>Client</title><p id=\"done\">back at the client</p>";
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (url, receiver)
}

fn query_value(target: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://client{target}"))
        .ok()?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[tokio::test]
async fn a_person_signs_in_and_consents_in_a_real_browser() {
    let backend = Backend::start().await;
    let (redirect_uri, mut callbacks) = callback_endpoint().await;
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("{}/oauth/register", backend.url))
        .json(&json!({
            "redirect_uris": [redirect_uri],
            "client_name": "Browser test client",
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let verifier = URL_SAFE_NO_PAD.encode(tokens::hash(&format!("verifier-{client_id}")));
    let challenge = URL_SAFE_NO_PAD.encode(tokens::hash(&verifier));
    let authorize = reqwest::Url::parse_with_params(
        &format!("{}/oauth/authorize", backend.url),
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("state", "browser-state-1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("scope", "read write"),
        ],
    )
    .unwrap();

    let browser = Browser::start().await.expect("headless Chromium starts");
    browser.goto(authorize.as_str()).await.unwrap();
    let page = browser
        .wait_for_text("Sign in", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(page.contains("Browser test client"), "{page}");

    // A wrong password: the page says so, and nothing reaches the client.
    let email = backend::email("acme", "responder");
    let sign_in = async |password: &str| {
        for (field, value) in [
            ("#organization", "acme"),
            ("#email", email.as_str()),
            ("#password", password),
        ] {
            let input = browser.find(field).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
        browser
            .find("#sign-in")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    };
    sign_in("not-the-password").await;
    let alert = browser
        .find("[role=alert]")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!alert.is_empty(), "a failed sign-in says why");
    assert!(
        callbacks.try_recv().is_err(),
        "no redirect after a failed sign-in"
    );

    // The right password leads to the consent page, which names what the client asks for.
    sign_in(&backend::password("acme", "responder")).await;
    browser.find("#allow").await.unwrap();
    let consent = browser.find("body").await.unwrap().text().await.unwrap();
    assert!(consent.contains("Browser test client"), "{consent}");
    assert!(
        browser
            .find("#scope-write")
            .await
            .unwrap()
            .attribute("checked")
            .await
            .unwrap()
            .is_some(),
        "a responder may grant write"
    );
    browser.find("#allow").await.unwrap().click().await.unwrap();
    browser.find("#done").await.unwrap();
    let target = tokio::time::timeout(Duration::from_secs(10), callbacks.recv())
        .await
        .expect("the browser comes back to the client")
        .unwrap();
    let landed = browser.current_url().await.unwrap();
    assert!(landed.starts_with(&redirect_uri), "{landed}");
    assert_eq!(
        query_value(&target, "state").as_deref(),
        Some("browser-state-1")
    );
    let code = query_value(&target, "code").expect("a code in the redirect");
    browser.close().await.unwrap();

    // The client redeems the code; the token acts as the person who signed in.
    let token: Value = http
        .post(format!("{}/oauth/token", backend.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"));
    assert_eq!(token["scope"], "read write", "{token}");
    let me: Value = http
        .get(format!("{}/api/v1/me", backend.url))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["email"], email.as_str(), "{me}");
    assert_eq!(me["organization"]["slug"], "acme", "{me}");

    // The code was for one use.
    let replayed = http
        .post(format!("{}/oauth/token", backend.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 400);
}
