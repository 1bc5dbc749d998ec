//! The OAuth authorization server over real HTTP: the whole flow a browser and a client go
//! through, and hostile input on every endpoint (refused with the RFC's error codes, nothing
//! issued).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use demo_backend::domain::kinds::Role;
use demo_backend::domain::passwords;
use demo_backend::http::{self, AppState};
use demo_backend::oauth::{OAuthSettings, PreRegisteredClient};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use test_harness::TestDatabase;
use tokio::sync::oneshot;

use crate::support::{TEST_RATE_LIMIT, create_organization, create_user, empty_database};

/// The resource a pre-registered resource server (standing for external-mcp) serves.
const MCP_RESOURCE: &str = "http://mcp.test/mcp";
const RESOURCE_SERVER_ID: &str = "external-mcp";
const RESOURCE_SERVER_SECRET: &str = "resource-server-secret-for-tests-only";
const REDIRECT_URI: &str = "http://127.0.0.1/callback";
const PASSWORD: &str = "a long test password";

/// demo-backend with its authorization server, one organisation (`acme`) with a responder and
/// a viewer who have passwords, and a client that follows no redirect and keeps no cookie.
struct AuthServer {
    issuer: String,
    db: TestDatabase,
    http: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

/// A registered public client.
struct PublicClient {
    client_id: String,
}

/// A finished sign-in: the code, and the verifier it needs.
struct Authorized {
    code: String,
    verifier: String,
}

impl AuthServer {
    async fn start() -> Self {
        let db = empty_database().await;
        create_organization(&db.pool, "acme").await;
        for (email, role) in [
            ("responder@acme.test", Role::Responder),
            ("viewer@acme.test", Role::Viewer),
        ] {
            create_user(&db.pool, "acme", email, role).await;
            passwords::set(&db.pool, "acme", email, PASSWORD)
                .await
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let settings = OAuthSettings {
            clients: vec![PreRegisteredClient {
                client_id: RESOURCE_SERVER_ID.into(),
                client_name: "Resource server".into(),
                client_secret_sha256: Sha256::digest(RESOURCE_SERVER_SECRET).into(),
                redirect_uris: vec![],
                grant_types: vec!["urn:ietf:params:oauth:grant-type:token-exchange".into()],
                resources_served: vec![MCP_RESOURCE.into()],
            }],
            ..OAuthSettings::new(&issuer).unwrap()
        };
        let state = AppState::new(db.pool.clone(), TEST_RATE_LIMIT).with_oauth(settings);
        let (shutdown, shutdown_received) = oneshot::channel::<()>();
        tokio::spawn(http::serve(listener, state, async move {
            let _ = shutdown_received.await;
        }));
        Self {
            issuer,
            db,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            _shutdown: shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    async fn register(&self) -> PublicClient {
        let response = self
            .http
            .post(self.url("/oauth/register"))
            .json(&json!({
                "redirect_uris": [REDIRECT_URI],
                "client_name": "Test host",
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert!(
            body.get("client_secret").is_none(),
            "a public client gets no secret"
        );
        PublicClient {
            client_id: body["client_id"].as_str().unwrap().to_owned(),
        }
    }

    /// The authorization URL's query for `client`, with a fresh PKCE pair.
    fn authorize_query(
        client: &PublicClient,
        scope: &str,
        resource: &str,
    ) -> (Vec<(String, String)>, String) {
        let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let query = vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client.client_id.clone()),
            (
                "redirect_uri".into(),
                "http://127.0.0.1:54321/callback".into(),
            ),
            ("state".into(), "state-123".into()),
            ("code_challenge".into(), challenge),
            ("code_challenge_method".into(), "S256".into()),
            ("scope".into(), scope.into()),
            ("resource".into(), resource.into()),
        ];
        (query, verifier)
    }

    async fn get_authorize(&self, query: &[(String, String)]) -> reqwest::Response {
        self.http
            .get(self.url("/oauth/authorize"))
            .query(query)
            .send()
            .await
            .unwrap()
    }

    /// Runs the browser's part: authorize, sign in, allow `granted`; returns the code.
    async fn authorize(
        &self,
        client: &PublicClient,
        email: &str,
        scope: &str,
        granted: &[&str],
    ) -> Authorized {
        let (query, verifier) = Self::authorize_query(client, scope, MCP_RESOURCE);
        let page = self.get_authorize(&query).await;
        assert_eq!(page.status(), StatusCode::OK);
        let cookie = session_cookie(&page);
        let html = page.text().await.unwrap();
        let consent = self.sign_in(&cookie, &html, email, PASSWORD).await;
        assert_eq!(consent.status(), StatusCode::OK);
        let html = consent.text().await.unwrap();
        assert!(
            html.contains("Test host"),
            "the consent page names the client: {html}"
        );
        let location = self.consent(&cookie, &html, "allow", granted).await;
        let redirect = url::Url::parse(&location).unwrap();
        assert_eq!(
            redirect.port(),
            Some(54321),
            "sent back to the port asked for"
        );
        let pairs: Vec<(String, String)> = redirect.query_pairs().into_owned().collect();
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(value("state").as_deref(), Some("state-123"));
        assert_eq!(
            value("iss").as_deref(),
            Some(self.issuer.as_str()),
            "RFC 9207 iss"
        );
        Authorized {
            code: value("code").unwrap_or_else(|| panic!("no code in {location}")),
            verifier,
        }
    }

    async fn sign_in(
        &self,
        cookie: &str,
        html: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/oauth/sign-in"))
            .header("cookie", cookie)
            .form(&[
                ("request", hidden(html, "request").as_str()),
                ("csrf", hidden(html, "csrf").as_str()),
                ("organization", "acme"),
                ("email", email),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Answers the consent page; returns the redirect's Location.
    async fn consent(&self, cookie: &str, html: &str, decision: &str, granted: &[&str]) -> String {
        let response = self
            .post_consent(
                cookie,
                &hidden(html, "request"),
                &hidden(html, "csrf"),
                decision,
                granted,
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    async fn post_consent(
        &self,
        cookie: &str,
        request: &str,
        csrf: &str,
        decision: &str,
        granted: &[&str],
    ) -> reqwest::Response {
        let mut form = vec![("request", request), ("csrf", csrf), ("decision", decision)];
        form.extend(granted.iter().map(|scope| ("scope", *scope)));
        self.http
            .post(self.url("/oauth/consent"))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store");
        (response.status(), response.json().await.unwrap())
    }

    async fn redeem(&self, client: &PublicClient, authorized: &Authorized) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client.client_id),
            ("code", &authorized.code),
            ("redirect_uri", "http://127.0.0.1:54321/callback"),
            ("code_verifier", &authorized.verifier),
        ])
        .await
    }

    /// Introspection as the resource server.
    async fn introspect(&self, token: &str) -> Value {
        self.http
            .post(self.url("/oauth/introspect"))
            .basic_auth(RESOURCE_SERVER_ID, Some(RESOURCE_SERVER_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn exchange(&self, subject: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(RESOURCE_SERVER_ID, Some(RESOURCE_SERVER_SECRET))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", subject),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("resource", &self.url("/api/v1")),
            ])
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn api_me(&self, token: &str) -> StatusCode {
        self.http
            .get(self.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn issued_tokens(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM oauth_access_tokens")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// `name=value` of the browser-binding cookie a response sets.
fn session_cookie(response: &reqwest::Response) -> String {
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The value of a hidden form field.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn error_of(location: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "error")
        .map(|(_, value)| value.into_owned())
}

#[tokio::test]
async fn metadata_describes_the_server() {
    let server = AuthServer::start().await;
    let metadata: Value = reqwest::get(server.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], server.issuer);
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );
    assert_eq!(metadata["token_endpoint"], server.url("/oauth/token"));
    assert_eq!(
        metadata["registration_endpoint"],
        server.url("/oauth/register")
    );
    assert_eq!(metadata["client_id_metadata_document_supported"], true);
}

#[tokio::test]
async fn metadata_documents_at_non_public_addresses_are_never_fetched() {
    let server = AuthServer::start().await;
    // Something listens on loopback, so a fetch would reach it: it must never be asked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((_connection, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    for (client_id, reason) in [
        (
            format!("https://127.0.0.1:{port}/client.json"),
            "not a public address",
        ),
        (
            format!("https://localhost:{port}/client.json"),
            "not a public address",
        ),
        (
            format!("https://[::1]:{port}/client.json"),
            "not a public address",
        ),
        (
            "https://169.254.169.254/latest/meta-data/client".to_owned(),
            "not a public address",
        ),
        (
            "https://10.0.0.1/client.json".to_owned(),
            "not a public address",
        ),
        (
            "https://[::ffff:192.168.0.1]/client.json".to_owned(),
            "not a public address",
        ),
        ("https://app.example/".to_owned(), "path"),
    ] {
        let client = PublicClient {
            client_id: client_id.clone(),
        };
        let (query, _) = AuthServer::authorize_query(&client, "read", MCP_RESOURCE);
        let response = server.get_authorize(&query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{client_id}");
        assert!(
            response.headers().get("location").is_none(),
            "never redirected: {client_id}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains(reason), "{client_id}: {page}");
        let (status, body) = server
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", "dmocode_x"),
                ("code_verifier", &"v".repeat(43)),
                ("redirect_uri", "http://127.0.0.1:54321/callback"),
            ])
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_client")),
            "{client_id}: {body}"
        );
    }
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn registrations_are_throttled_per_address() {
    let server = AuthServer::start().await;
    let limit = 20;
    for _ in 0..limit {
        server.register().await;
    }
    let response = server
        .http
        .post(server.url("/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 3_000, "about an hour: {wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let clients: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_clients")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    assert_eq!(clients, limit, "the refused registration wrote nothing");
}

#[tokio::test]
async fn a_full_authorization_gives_a_token_bound_to_its_resource_which_is_exchanged_for_the_api() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(
            &client,
            "responder@acme.test",
            "read write",
            &["read", "write"],
        )
        .await;
    let (status, tokens) = server.redeem(&client, &authorized).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "read write");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(access.starts_with("dmoat_"));
    assert!(tokens["expires_in"].as_i64().unwrap() <= 600);

    // Issued for the MCP resource, so the API refuses it.
    assert_eq!(server.api_me(access).await, StatusCode::UNAUTHORIZED);
    // The resource server learns that it is for it.
    let introspection = server.introspect(access).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["aud"], MCP_RESOURCE);
    assert_eq!(introspection["scope"], "read write");
    assert_eq!(introspection["username"], "responder@acme.test");

    // It trades it for a short-lived API token of the same user and scopes.
    let (status, exchanged) = server.exchange(access).await;
    assert_eq!(status, StatusCode::OK, "{exchanged}");
    assert_eq!(
        exchanged["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let api_token = exchanged["access_token"].as_str().unwrap();
    assert!(exchanged["expires_in"].as_i64().unwrap() <= 300);
    let me: Value = server
        .http
        .get(server.url("/api/v1/me"))
        .bearer_auth(api_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["email"], "responder@acme.test");
    assert_eq!(me["token"]["scopes"], json!(["read", "write"]));
    // An API token is not for the resource server: introspection says inactive, exchange refuses.
    assert_eq!(server.introspect(api_token).await["active"], false);
    assert_eq!(server.exchange(api_token).await.0, StatusCode::BAD_REQUEST);

    // Revoking the access token revokes what was exchanged from it.
    let revoked = server
        .http
        .post(server.url("/oauth/revoke"))
        .form(&[("client_id", client.client_id.as_str()), ("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(server.introspect(access).await["active"], false);
    assert_eq!(server.api_me(api_token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(&client, "responder@acme.test", "read write", &["read"])
        .await;
    let (_, first) = server.redeem(&client, &authorized).await;
    assert_eq!(first["scope"], "read", "the user granted fewer scopes");
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let server = &server;
        let client_id = client.client_id.clone();
        async move {
            server
                .token(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &token),
                ])
                .await
        }
    };
    let (status, second) = refresh(first_refresh.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh, "rotated");
    let second_access = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.introspect(&second_access).await["active"], true);

    // The old refresh token again: refused, and the whole family is revoked.
    let (status, reused) = refresh(first_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"], "invalid_grant");
    assert_eq!(server.introspect(&second_access).await["active"], false);
    assert_eq!(refresh(second_refresh).await.1["error"], "invalid_grant");

    // A refresh cannot widen the grant.
    let authorized = server
        .authorize(&client, "responder@acme.test", "read", &["read"])
        .await;
    let (_, tokens) = server.redeem(&client, &authorized).await;
    let (status, widened) = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client.client_id),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("scope", "read write"),
        ])
        .await;
    assert_eq!(
        (status, widened["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn a_viewer_cannot_grant_write() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(
            &client,
            "viewer@acme.test",
            "read write",
            &["read", "write"],
        )
        .await;
    let (_, tokens) = server.redeem(&client, &authorized).await;
    assert_eq!(tokens["scope"], "read");
}

#[tokio::test]
async fn pkce_failures_and_code_replay_issue_nothing_and_replay_revokes_the_first_issue() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(&client, "responder@acme.test", "read", &["read"])
        .await;
    let base = |verifier: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", client.client_id.clone()),
            ("code", authorized.code.clone()),
            ("redirect_uri", "http://127.0.0.1:54321/callback".to_owned()),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier.to_owned()));
        }
        form
    };
    let server = &server;
    let send = |form: Vec<(&'static str, String)>| async move {
        let form: Vec<(&str, &str)> = form
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        server.token(&form).await
    };
    let wrong = URL_SAFE_NO_PAD.encode(rand_bytes());
    assert_eq!(send(base(Some(&wrong))).await.1["error"], "invalid_grant");
    assert_eq!(send(base(None)).await.1["error"], "invalid_request");
    let mut other_redirect = base(Some(&authorized.verifier));
    other_redirect[3].1 = "http://127.0.0.1:1/elsewhere".into();
    assert_eq!(send(other_redirect).await.1["error"], "invalid_grant");
    assert_eq!(server.issued_tokens().await, 0, "nothing issued");

    let (status, first) = send(base(Some(&authorized.verifier))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, replay) = send(base(Some(&authorized.verifier))).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        server
            .introspect(first["access_token"].as_str().unwrap())
            .await["active"],
        false,
        "the replay revoked what the first use issued"
    );
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(&client, "responder@acme.test", "read", &["read"])
        .await;
    sqlx::query("UPDATE oauth_authorization_codes SET expires_at = now() - interval '1 second'")
        .execute(&server.db.pool)
        .await
        .unwrap();
    let (status, body) = server.redeem(&client, &authorized).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(server.issued_tokens().await, 0);
}

#[tokio::test]
async fn bad_authorization_requests_are_never_redirected_elsewhere() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let (query, _) = AuthServer::authorize_query(&client, "read", MCP_RESOURCE);
    let with = |name: &str, value: Option<&str>| {
        let mut query: Vec<(String, String)> = query
            .iter()
            .filter(|(key, _)| key != name)
            .cloned()
            .collect();
        if let Some(value) = value {
            query.push((name.to_owned(), value.to_owned()));
        }
        query
    };
    // Unknown client, unregistered or missing redirect URI: an error page, no Location at all.
    for bad in [
        with("redirect_uri", Some("https://evil.example/callback")),
        with(
            "redirect_uri",
            Some("http://127.0.0.1:54321/callback/../../evil"),
        ),
        with("redirect_uri", Some("http://localhost:54321/callback")),
        with("redirect_uri", None),
        with("client_id", Some("dmoc_unknown")),
        with("client_id", None),
    ] {
        let response = server.get_authorize(&bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(response.headers().get("location").is_none(), "{bad:?}");
        assert!(response.headers().get("set-cookie").is_none(), "{bad:?}");
    }
    // A verified redirect URI gets the RFC error codes.
    for (bad, code) in [
        (with("state", None), "invalid_request"),
        (with("code_challenge", None), "invalid_request"),
        (
            with("code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (
            with("response_type", Some("token")),
            "unsupported_response_type",
        ),
        (with("scope", Some("read admin")), "invalid_scope"),
        (
            with("resource", Some("https://other.example/mcp")),
            "invalid_target",
        ),
    ] {
        let response = server.get_authorize(&bad).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{bad:?}");
        let location = response.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with("http://127.0.0.1:54321/callback?"),
            "{location}"
        );
        assert_eq!(error_of(location).as_deref(), Some(code), "{location}");
    }
    let mut repeated = query.clone();
    repeated.push(("state".into(), "second".into()));
    let response = server.get_authorize(&repeated).await;
    assert_eq!(
        error_of(response.headers()["location"].to_str().unwrap()).as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn forms_without_their_browser_or_anti_csrf_token_are_refused() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let (query, _) = AuthServer::authorize_query(&client, "read", MCP_RESOURCE);
    let page = server.get_authorize(&query).await;
    let cookie = session_cookie(&page);
    let html = page.text().await.unwrap();
    let consent_page = server
        .sign_in(&cookie, &html, "responder@acme.test", PASSWORD)
        .await
        .text()
        .await
        .unwrap();
    let request = hidden(&consent_page, "request");
    let csrf = hidden(&consent_page, "csrf");

    // Another browser (no cookie, or the attacker's own), or a forged token: 403, nothing issued.
    let foreign = format!("{}=0000", cookie.split('=').next().unwrap());
    for (cookie, csrf) in [
        ("", csrf.as_str()),
        (foreign.as_str(), csrf.as_str()),
        (cookie.as_str(), "forged"),
        (cookie.as_str(), hidden(&html, "csrf").as_str()),
    ] {
        let response = server
            .post_consent(cookie, &request, csrf, "allow", &["read"])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get("location").is_none());
    }
    let codes: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_authorization_codes")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    assert_eq!(codes, 0);

    // Consent without sign-in is refused too: a fresh request's form, straight to consent.
    let page = server.get_authorize(&query).await;
    let cookie = session_cookie(&page);
    let html = page.text().await.unwrap();
    let response = server
        .post_consent(
            &cookie,
            &hidden(&html, "request"),
            &hidden(&html, "csrf"),
            "allow",
            &["read"],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Denying sends access_denied back; the request cannot be answered twice.
    let location = server
        .consent(
            &cookie,
            &server
                .sign_in(&cookie, &html, "responder@acme.test", PASSWORD)
                .await
                .text()
                .await
                .unwrap(),
            "deny",
            &["read"],
        )
        .await;
    assert_eq!(error_of(&location).as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn password_guessing_is_throttled_and_issues_nothing() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let (query, _) = AuthServer::authorize_query(&client, "read", MCP_RESOURCE);
    let page = server.get_authorize(&query).await;
    let cookie = session_cookie(&page);
    let mut html = page.text().await.unwrap();
    for attempt in 0..5 {
        let response = server
            .sign_in(
                &cookie,
                &html,
                "responder@acme.test",
                &format!("guess number {attempt}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        html = response.text().await.unwrap();
        assert!(html.contains("wrong"), "{html}");
        assert!(
            !html.contains("guess number"),
            "the password is never echoed"
        );
    }
    // Now even the right password is not checked.
    let response = server
        .sign_in(&cookie, &html, "responder@acme.test", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let signed_in: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_authorization_requests WHERE user_id IS NOT NULL",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(signed_in, 0);
    // The other account from the same address still signs in (its own limit is not reached).
    let html = response.text().await.unwrap();
    let other = server
        .sign_in(&cookie, &html, "viewer@acme.test", PASSWORD)
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn registration_refuses_unsafe_metadata() {
    let server = AuthServer::start().await;
    let check = |metadata: Value, code: &'static str| {
        let server = &server;
        async move {
            let response = server
                .http
                .post(server.url("/oauth/register"))
                .json(&metadata)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{metadata}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], code, "{metadata}: {body}");
        }
    };
    check(
        json!({"redirect_uris": ["http://evil.example/cb"]}),
        "invalid_redirect_uri",
    )
    .await;
    check(
        json!({"redirect_uris": ["javascript:alert(1)"]}),
        "invalid_redirect_uri",
    )
    .await;
    check(
        json!({"redirect_uris": ["https://a.example/cb#x"]}),
        "invalid_redirect_uri",
    )
    .await;
    check(json!({}), "invalid_redirect_uri").await;
    check(
        json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
        "invalid_client_metadata",
    )
    .await;
    check(
        json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
        "invalid_client_metadata",
    )
    .await;
    check(
        json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
        "invalid_client_metadata",
    )
    .await;
    check(json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}), "invalid_client_metadata").await;
    let clients: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_clients")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    assert_eq!(clients, 0, "nothing written");

    // A confidential registration gets a secret, and must use it.
    let registered: Value = server
        .http
        .post(server.url("/oauth/register"))
        .json(&json!({"redirect_uris": ["https://a.example/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        registered["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    let client_id = registered["client_id"].as_str().unwrap();
    let (status, body) = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", "dmort_x"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn only_the_resource_server_may_introspect_and_exchange() {
    let server = AuthServer::start().await;
    let client = server.register().await;
    let authorized = server
        .authorize(&client, "responder@acme.test", "read", &["read"])
        .await;
    let (_, tokens) = server.redeem(&client, &authorized).await;
    let access = tokens["access_token"].as_str().unwrap();
    // The public client itself may neither introspect nor exchange.
    let response = server
        .http
        .post(server.url("/oauth/introspect"))
        .form(&[("client_id", client.client_id.as_str()), ("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, body) = server
        .token(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("client_id", &client.client_id),
            ("subject_token", access),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    // A wrong secret is invalid_client.
    let response = server
        .http
        .post(server.url("/oauth/introspect"))
        .basic_auth(RESOURCE_SERVER_ID, Some("wrong"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Unsupported grants.
    let (_, body) = server
        .token(&[("grant_type", "password"), ("client_id", &client.client_id)])
        .await;
    assert_eq!(body["error"], "unsupported_grant_type");
}
