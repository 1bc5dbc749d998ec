//! The web side over real HTTP: sign-in through the product's real OAuth server (sign-in page,
//! consent, callback), sessions and their CSRF tokens, other users' conversations, expired
//! sessions, oversized questions, hostile answers, stopping, and the role read again per turn.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::web_investigations::{finished_investigation, organization_id};
use crate::web_support::WebApp;

#[tokio::test]
async fn signed_out_visitors_see_only_the_sign_in_page() {
    let app = WebApp::start().await;
    let browser = app.browser();
    let front = browser.get("/").await;
    assert_eq!(front.status(), StatusCode::OK);
    let html = front.text().await.unwrap();
    assert!(html.contains("href=\"/auth/sign-in\""), "{html}");
    assert!(!html.contains("Conversations"), "{html}");
    let someone = Uuid::new_v4();
    for path in [
        format!("/conversations/{someone}"),
        format!("/conversations/{someone}/events"),
        format!("/conversations/{someone}/turns/{someone}"),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let posted = browser
        .post("/conversations", &[("question", "hello"), ("csrf", "x")])
        .await;
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);

    // The sign-in starts with PKCE S256 and a state bound to a short-lived cookie.
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let start = client
        .get(format!("{}/auth/sign-in", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/oauth/authorize?", app.issuer)),
        "{location}"
    );
    for part in [
        "response_type=code",
        "client_id=internal-host",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
    ] {
        assert!(location.contains(part), "{location}");
    }
    let cookie = start.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("internal_host_sign_in="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/auth", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let csp = start.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

#[tokio::test]
async fn a_user_signs_in_through_the_product_and_signs_out() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let html = browser.get("/").await.text().await.unwrap();
    assert!(html.contains("Marcus Oyelaran"), "{html}");
    assert!(html.contains("Acme Retail"), "{html}");
    assert!(
        html.contains("<strong class=\"role\">responder</strong>"),
        "{html}"
    );
    assert!(html.contains("scripted-model"), "{html}");
    assert!(html.contains("small local model"), "{html}");

    // Only the cookie's digest is stored.
    let cookie = browser.session_cookie().expect("a session cookie");
    assert_eq!(cookie.len(), 43);
    let digest = Sha256::digest(cookie.as_bytes()).to_vec();
    let (stored, role): (i64, String) =
        sqlx::query_as("SELECT count(*), max(role) FROM sessions WHERE id_digest = $1")
            .bind(&digest)
            .fetch_one(app.host())
            .await
            .unwrap();
    assert_eq!((stored, role.as_str()), (1, "responder"));
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE position($1 IN csrf_token || coalesce(refresh_token, '')) > 0",
    )
    .bind(&cookie)
    .fetch_one(app.host())
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    // Sign-out needs the CSRF token, deletes the session and revokes the grant.
    let refused = browser.post("/auth/sign-out", &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = browser
        .post("/auth/sign-out", &[("csrf", browser.csrf.as_str())])
        .await;
    assert_eq!(out.status(), StatusCode::OK);
    assert!(out.text().await.unwrap().contains("/auth/sign-in"));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id_digest = $1")
        .bind(&digest)
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let live_grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_grants WHERE client_id = 'internal-host' AND revoked_at IS NULL",
    )
    .fetch_one(app.product())
    .await
    .unwrap();
    assert_eq!(live_grants, 0, "sign-out revokes the refresh token's grant");
}

#[tokio::test]
async fn a_callback_that_is_not_this_browsers_sign_in_is_refused() {
    let app = WebApp::start().await;
    let browser = app.browser();
    // No sign-in started in this browser.
    let response = browser.get("/auth/callback?code=abc&state=def").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Started, but the state differs; the pending sign-in is used up either way.
    let page = browser.get("/auth/sign-in").await;
    assert_eq!(page.status(), StatusCode::OK);
    let response = browser.get("/auth/callback?code=abc&state=forged").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    // The server's own refusal is shown on the sign-in page.
    browser.get("/auth/sign-in").await;
    let pending: String = sqlx::query_scalar("SELECT state FROM pending_sign_ins LIMIT 1")
        .fetch_one(app.host())
        .await
        .unwrap();
    let denied = browser
        .get(&format!(
            "/auth/callback?error=access_denied&error_description=%3Cscript%3Enope%3C%2Fscript%3E&state={pending}"
        ))
        .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let html = denied.text().await.unwrap();
    assert!(html.contains("Signing in did not complete"), "{html}");
    assert!(
        html.contains("nope") && !html.contains("<script>nope"),
        "{html}"
    );
}

/// The POST routes of the web router, as written in its source (`{name}` placeholders).
fn post_routes_of_the_router() -> BTreeSet<String> {
    include_str!("../../src/web/mod.rs")
        .split(".route(")
        .skip(1)
        .filter(|route| route.contains("post("))
        .filter_map(|route| route.split('"').nth(1).map(str::to_owned))
        .collect()
}

/// What a refused form must leave as it was: conversations, turns and their status, events,
/// approvals and their status, sessions, and the questions and decisions the agent got.
async fn everything_a_form_can_change(app: &WebApp) -> (String, usize) {
    let stored: String = sqlx::query_scalar(
        "SELECT concat_ws(' | ',
            (SELECT count(*) FROM conversations),
            (SELECT string_agg(id || ' ' || status, ', ' ORDER BY id) FROM turns),
            (SELECT count(*) FROM events),
            (SELECT string_agg(id || ' ' || status, ', ' ORDER BY id) FROM approvals),
            (SELECT count(*) FROM sessions))",
    )
    .fetch_one(app.host())
    .await
    .unwrap();
    (stored, app.seen.lock().unwrap().len())
}

#[tokio::test]
async fn every_post_route_refuses_a_missing_or_wrong_csrf_token_and_changes_nothing() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let other_session = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("hello").await;
    let turn = app.last_turn(conversation).await;
    app.settled(turn).await;
    let approval = put_pending_approval(&app, conversation, turn).await;
    let organization = organization_id(app.product(), "acme").await;
    let (investigation, _, _) = finished_investigation(app.host(), organization).await;

    // Every POST route, with the fields its form carries (confirm and reject share a route).
    let forms: [(&str, &[(&str, &str)]); 7] = [
        ("/conversations", &[("question", "new")]),
        (
            "/conversations/{conversation_id}/turns",
            &[("question", "follow-up")],
        ),
        ("/conversations/{conversation_id}/turns/{turn_id}/stop", &[]),
        (
            "/conversations/{conversation_id}/approvals/{approval_id}",
            &[("decision", "confirm")],
        ),
        (
            "/conversations/{conversation_id}/approvals/{approval_id}",
            &[("decision", "reject")],
        ),
        (
            "/investigations/{investigation_id}/chat",
            &[("question", "more")],
        ),
        ("/auth/sign-out", &[]),
    ];
    let tried: BTreeSet<String> = forms.iter().map(|(route, _)| (*route).to_owned()).collect();
    assert_eq!(
        tried,
        post_routes_of_the_router(),
        "every POST route of the router is tried"
    );

    let before = everything_a_form_can_change(&app).await;
    let wrong_tokens: [&[(&str, &str)]; 4] = [
        &[],
        &[("csrf", "wrong")],
        &[("csrf", ""), ("csrf", browser.csrf.as_str())],
        &[("csrf", other_session.csrf.as_str())],
    ];
    for (route, fields) in forms {
        let path = route
            .replace("{conversation_id}", &conversation.to_string())
            .replace("{turn_id}", &turn.to_string())
            .replace("{approval_id}", &approval.to_string())
            .replace("{investigation_id}", &investigation.to_string());
        for token in wrong_tokens {
            let form: Vec<(&str, &str)> = token.iter().chain(fields).copied().collect();
            let response = browser.post(&path, &form).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {form:?}");
            let body = response.text().await.unwrap();
            assert!(body.contains("CSRF"), "{path} {form:?}: {body}");
        }
    }
    assert_eq!(
        everything_a_form_can_change(&app).await,
        before,
        "a refused form changed something"
    );
    let html = browser.get("/").await.text().await.unwrap();
    assert!(html.contains("Conversations"), "still signed in: {html}");

    // The header works as well as the field (the page's script may use either).
    let response = browser
        .client
        .post(format!("{}/conversations", app.base))
        .header("x-csrf-token", &browser.csrf)
        .form(&[("question", "hello")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_users_conversation_is_not_found() {
    let app = WebApp::start().await;
    let marcus = app.signed_in("acme", "marcus").await;
    let conversation = marcus.ask_new("what is marcus's secret question").await;
    let turn = app.last_turn(conversation).await;
    app.settled(turn).await;
    let own = marcus.get(&format!("/conversations/{conversation}")).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert!(
        own.text()
            .await
            .unwrap()
            .contains("marcus&#39;s secret question")
    );

    for (slug, handle) in [("acme", "priya"), ("globex", "olivia")] {
        let other = app.signed_in(slug, handle).await;
        let csrf = other.csrf.as_str();
        for path in [
            format!("/conversations/{conversation}"),
            format!("/conversations/{conversation}/events"),
            format!("/conversations/{conversation}/turns/{turn}"),
        ] {
            let response = other.get(&path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{handle} {path}");
            assert!(!response.text().await.unwrap().contains("secret question"));
        }
        for path in [
            format!("/conversations/{conversation}/turns"),
            format!("/conversations/{conversation}/turns/{turn}/stop"),
            format!("/conversations/{conversation}/approvals/{turn}"),
        ] {
            let response = other
                .post(
                    &path,
                    &[
                        ("csrf", csrf),
                        ("question", "mine now"),
                        ("decision", "confirm"),
                    ],
                )
                .await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{handle} {path}");
        }
        let listed = other.get("/").await.text().await.unwrap();
        let malformed = other.get("/conversations/not-an-id").await;
        assert_eq!(malformed.status(), StatusCode::NOT_FOUND);
        assert!(!listed.contains("secret question"), "{listed}");
    }
    let turns: i64 = sqlx::query_scalar("SELECT count(*) FROM turns WHERE conversation_id = $1")
        .bind(conversation)
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(turns, 1);
}

#[tokio::test]
async fn an_expired_session_leads_back_to_sign_in() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("before it expires").await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(app.host())
        .await
        .unwrap();
    let front = browser.get("/").await;
    assert_eq!(front.status(), StatusCode::OK);
    let html = front.text().await.unwrap();
    assert!(html.contains("Your session has ended"), "{html}");
    assert!(html.contains("/auth/sign-in"), "{html}");
    let page = browser.get(&format!("/conversations/{conversation}")).await;
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let stream = browser
        .get(&format!("/conversations/{conversation}/events"))
        .await;
    assert_eq!(stream.status(), StatusCode::UNAUTHORIZED);
    let posted = browser
        .post(
            &format!("/conversations/{conversation}/turns"),
            &[("csrf", browser.csrf.as_str()), ("question", "after")],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversized_and_empty_questions_get_clear_errors() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let long = "x".repeat(8_001);
    let response = browser
        .post(
            "/conversations",
            &[("csrf", browser.csrf.as_str()), ("question", long.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("8001 characters") && html.contains("at most 8000"),
        "{html}"
    );
    let response = browser
        .post(
            "/conversations",
            &[("csrf", browser.csrf.as_str()), ("question", "  ")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let huge = "x".repeat(1_000_000);
    let response = browser
        .post(
            "/conversations",
            &[("csrf", browser.csrf.as_str()), ("question", huge.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let conversations: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(conversations, 0);
}

#[tokio::test]
async fn hostile_answers_and_traces_are_rendered_inert() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser
        .ask_new("a hostile answer <script>alert('q')</script>")
        .await;
    let turn = app.last_turn(conversation).await;
    assert_eq!(app.settled(turn).await, "completed");
    let html = browser
        .get(&format!("/conversations/{conversation}"))
        .await
        .text()
        .await
        .unwrap();
    for inert in [
        "&lt;script&gt;alert('answer')&lt;/script&gt;",
        "&lt;img src=x onerror=alert(2)&gt;",
        "removed-link",
        "image: pixel",
        "<strong>bold</strong>",
        "&#60;script&#62;alert(&#39;q&#39;)&#60;/script&#62;",
    ] {
        assert!(html.contains(inert), "missing {inert:?} in {html}");
    }
    for active in [
        "<script>alert",
        "javascript:",
        "<img",
        "src=\"https://evil",
        "<b>bold?</b>",
        "<i>unknown</i>",
    ] {
        assert!(!html.contains(active), "found {active:?} in {html}");
    }
    // The trace: server, tool, SQL, sizes, truncated, tool errors apart, and a chart.
    for shown in [
        "internal-mcp · run_select",
        "SELECT service, count(*) FROM incidents GROUP BY 1",
        "3 rows",
        "2.0 KiB",
        "truncated",
        "tool error",
        "The tool&#39;s error",
        "<svg class=\"chart\"",
        "1 model call(s) · 2 tool call(s)",
        "answered by scripted-model (local)",
    ] {
        assert!(html.contains(shown), "missing {shown:?} in {html}");
    }
    // The fragment the script swaps in is the same server rendering.
    let fragment = browser
        .get(&format!("/conversations/{conversation}/turns/{turn}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        fragment.starts_with("<article class=\"turn status-completed\""),
        "{fragment}"
    );
    assert!(!fragment.contains("<script>alert"));
}

#[tokio::test]
async fn stop_ends_a_running_turn_and_one_turn_runs_at_a_time() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("please wait for me").await;
    let turn = app.last_turn(conversation).await;
    let page = browser
        .get(&format!("/conversations/{conversation}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("class=\"stop-button\""), "{page}");
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "a page without script refreshes itself"
    );
    let second = browser
        .post(
            &format!("/conversations/{conversation}/turns"),
            &[("csrf", browser.csrf.as_str()), ("question", "another")],
        )
        .await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let stopped = browser
        .post(
            &format!("/conversations/{conversation}/turns/{turn}/stop"),
            &[("csrf", browser.csrf.as_str())],
        )
        .await;
    assert_eq!(stopped.status(), StatusCode::OK);
    assert_eq!(app.settled(turn).await, "stopped");
    // The end is in the log, so every reader learns it.
    let mut finished = None;
    for _ in 0..100 {
        let events = app.state.events().read_turn(turn).await.unwrap();
        finished = events.iter().find_map(|stored| match &stored.event {
            internal_host::events::TurnEvent::TurnFinished { status, .. } => Some(*status),
            _ => None,
        });
        if finished.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(finished, Some(internal_host::events::TurnStatus::Stopped));
    // Now the conversation takes a new question.
    let third = browser
        .post(
            &format!("/conversations/{conversation}/turns"),
            &[("csrf", browser.csrf.as_str()), ("question", "and now?")],
        )
        .await;
    assert_eq!(third.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_turn_acts_with_the_role_the_user_has_now() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    sqlx::query("UPDATE users SET role = 'viewer' WHERE email LIKE 'marcus@%'")
        .execute(app.product())
        .await
        .unwrap();
    let conversation = browser.ask_new("what may I do").await;
    app.settled(app.last_turn(conversation).await).await;
    let seen = app.seen.lock().unwrap().clone();
    let (user, question) = seen.last().expect("the agent ran");
    assert_eq!(question, "what may I do");
    assert_eq!(
        user.role, "viewer",
        "the demotion is seen at the turn's start"
    );
    let html = browser.get("/").await.text().await.unwrap();
    assert!(
        html.contains("<strong class=\"role\">viewer</strong>"),
        "{html}"
    );
    // A page load re-reads the role once the last reading is older than the interval.
    sqlx::query("UPDATE users SET role = 'admin' WHERE email LIKE 'marcus@%'")
        .execute(app.product())
        .await
        .unwrap();
    let html = browser.get("/").await.text().await.unwrap();
    assert!(
        html.contains("class=\"role\">viewer<"),
        "still fresh: {html}"
    );
    sqlx::query("UPDATE sessions SET role_checked_at = now() - interval '6 minutes'")
        .execute(app.host())
        .await
        .unwrap();
    let html = browser.get("/").await.text().await.unwrap();
    assert!(html.contains("class=\"role\">admin<"), "{html}");
    // A user removed from the product loses the session at the next re-read.
    sqlx::query("UPDATE oauth_grants SET revoked_at = now() WHERE client_id = 'internal-host'")
        .execute(app.product())
        .await
        .unwrap();
    let refused = browser
        .post(
            &format!("/conversations/{conversation}/turns"),
            &[("csrf", browser.csrf.as_str()), ("question", "still here?")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let front = browser.get("/").await.text().await.unwrap();
    assert!(front.contains("/auth/sign-in"), "{front}");
}

/// A pending approval of the settled `turn`, put in place as the agent would have asked for it
/// (its plan's summary holds markup, its token is `secret-token`).
async fn put_pending_approval(app: &WebApp, conversation: Uuid, turn: Uuid) -> Uuid {
    let approval = Uuid::new_v4();
    sqlx::query(
        "UPDATE turns SET status = 'waiting_for_approval', finished_at = NULL WHERE id = $1",
    )
    .bind(turn)
    .execute(app.host())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO approvals (id, turn_id, call_id, server, tool, arguments, plan, confirmation_token, status, expires_at)
         VALUES ($1, $2, 'call-1', 'internal-mcp', 'annotate_incident', '{}', $3, 'secret-token', 'pending', now() + interval '5 minutes')",
    )
    .bind(approval)
    .bind(turn)
    .bind(serde_json::json!({"summary": "Add a note to INC-4 <b>now</b>"}))
    .execute(app.host())
    .await
    .unwrap();
    let requested = internal_host::events::TurnEvent::ApprovalRequested {
        approval_id: approval,
        server: "internal-mcp".into(),
        tool: "annotate_incident".into(),
        plan: serde_json::json!({"summary": "Add a note to INC-4 <b>now</b>"}),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
    };
    app.state
        .events()
        .append(conversation, turn, &requested)
        .await
        .unwrap();
    approval
}

#[tokio::test]
async fn approvals_are_answered_only_by_their_owner_with_csrf() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("annotate INC-4").await;
    let turn = app.last_turn(conversation).await;
    app.settled(turn).await;
    let approval = put_pending_approval(&app, conversation, turn).await;
    let html = browser
        .get(&format!("/conversations/{conversation}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Add a note to INC-4 &#60;b&#62;now"),
        "{html}"
    );
    assert!(!html.contains("<b>now"), "{html}");
    assert!(html.contains("class=\"confirm\""), "{html}");
    assert!(
        !html.contains("secret-token"),
        "the token never reaches the page"
    );
    let path = format!("/conversations/{conversation}/approvals/{approval}");
    let no_csrf = browser.post(&path, &[("decision", "confirm")]).await;
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let other = app.signed_in("acme", "priya").await;
    let foreign = other
        .post(
            &path,
            &[("csrf", other.csrf.as_str()), ("decision", "confirm")],
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let bad = browser
        .post(
            &path,
            &[("csrf", browser.csrf.as_str()), ("decision", "maybe")],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let confirmed = browser
        .post(
            &path,
            &[("csrf", browser.csrf.as_str()), ("decision", "confirm")],
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert_eq!(app.settled(turn).await, "completed");
    let again = browser
        .post(
            &path,
            &[("csrf", browser.csrf.as_str()), ("decision", "confirm")],
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let decided: Vec<String> = app
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, what)| what.clone())
        .collect();
    assert!(
        decided.contains(&format!("Confirm {approval}")),
        "{decided:?}"
    );
}

#[tokio::test]
async fn turns_left_running_by_an_earlier_process_end_failed() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("please wait forever").await;
    let turn = app.last_turn(conversation).await;
    // As if the process died: the row says running, but no task here will end it.
    let ended = internal_host::turns::end_interrupted_turns(app.host(), app.state.events())
        .await
        .unwrap();
    assert_eq!(ended, 1);
    let status: String = sqlx::query_scalar("SELECT status FROM turns WHERE id = $1")
        .bind(turn)
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(status, "failed");
    let html = browser
        .get(&format!("/conversations/{conversation}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("restarted while it worked"), "{html}");
}

#[tokio::test]
async fn the_host_does_not_start_when_the_sign_in_server_cannot_be_read() {
    let database = crate::support::seeded_database().await;
    let mut config = crate::support::host_config(&database, "http://127.0.0.1:1/mcp");
    config.web.sign_in = Some(internal_host::config::SignInConfig {
        issuer: "http://127.0.0.1:1".into(),
        client_id: "internal-host".into(),
        client_secret: internal_host::config::ClientSecret::new(
            "a secret that must never print".into(),
        ),
        discovery_timeout: std::time::Duration::from_secs(1),
    });
    match internal_host::AppState::connect(config).await {
        Err(internal_host::Error::Startup(message)) => {
            assert!(message.contains("metadata"), "{message}");
            assert!(!message.contains("must never print"), "{message}");
        }
        Err(other) => panic!("expected a start-up refusal, got {other}"),
        Ok(_) => panic!("the host started without its sign-in server"),
    }
}

#[tokio::test]
async fn stop_ends_a_waiting_turn_whose_task_is_gone() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("annotate INC-7").await;
    let turn = app.last_turn(conversation).await;
    app.settled(turn).await;
    // As after a restart: the turn waits for an approval and no task of this process has it.
    let approval = Uuid::new_v4();
    sqlx::query(
        "UPDATE turns SET status = 'waiting_for_approval', finished_at = NULL WHERE id = $1",
    )
    .bind(turn)
    .execute(app.host())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO approvals (id, turn_id, call_id, server, tool, arguments, plan, confirmation_token, status, expires_at)
         VALUES ($1, $2, 'call-1', 'internal-mcp', 'annotate_incident', '{}', '{}', 'secret-token', 'pending', now() + interval '5 minutes')",
    )
    .bind(approval)
    .bind(turn)
    .execute(app.host())
    .await
    .unwrap();
    let stopped = browser
        .post(
            &format!("/conversations/{conversation}/turns/{turn}/stop"),
            &[("csrf", browser.csrf.as_str())],
        )
        .await;
    assert_eq!(stopped.status(), StatusCode::OK);
    let (turn_status, approval_status): (String, String) = sqlx::query_as(
        "SELECT t.status, a.status FROM turns t JOIN approvals a ON a.turn_id = t.id WHERE t.id = $1",
    )
    .bind(turn)
    .fetch_one(app.host())
    .await
    .unwrap();
    assert_eq!(
        (turn_status.as_str(), approval_status.as_str()),
        ("stopped", "expired")
    );
    let confirm = browser
        .post(
            &format!("/conversations/{conversation}/approvals/{approval}"),
            &[("csrf", browser.csrf.as_str()), ("decision", "confirm")],
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::CONFLICT);
}
