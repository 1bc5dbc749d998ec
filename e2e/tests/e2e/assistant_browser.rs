//! The internal user path end to end, as a person lives it in a real headless Chromium: the real
//! `demo-backend` (API, OAuth server with internal-host pre-registered as a confidential client),
//! the real `internal-mcp` and `internal-host serve` binaries, and a scripted OpenAI-compatible
//! model server (the only part not real: it plays the model's side of a fixed script). The person
//! signs in through the product's pages, asks which deploy caused the seed's story incident (the
//! trace shows the SQL, a chart and the correlation), has a note added after confirming it (the
//! REST API then shows the note once), stops a question whose answer stalls, and reloads the page
//! to find all of it still there. A second test has AgenticOps investigate the story's incident
//! and the person read the investigation (report, chart, steps) and continue it in a chat. A third
//! gives the assistant external-mcp too (over stdio, from an `mcpServers` file): the same question
//! answered by both servers agrees.

#[path = "../../../internal-host/tests/it/scripted_model.rs"]
mod scripted_model;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use demo_backend::domain::tokens;
use demo_backend::seed::Story;
use scripted_model::{Reply, SCRIPTED_MODEL_NAME, ScriptedModel};
use serde_json::{Value, json};
use test_harness::backend::{self, Backend};
use test_harness::browser::Browser;
use test_harness::process::{binary, free_port, spawn, wait_until_ready};
use tokio::process::Child;

use crate::internal_path::{InternalMcp, SIGNING_KEY, acme_story};

/// The host role's database password (bootstrap_sql wants 16+ characters).
const HOST_DATABASE_PASSWORD: &str = "e2e-internal-host-database-password";
const CLIENT_SECRET: &str = "e2e-internal-host-oauth-client-secret-0123456789";
/// How long a step that waits on the agent (model calls, tool calls, the event stream) may take.
const AGENT_WAIT: Duration = Duration::from_secs(60);
const NOTE: &str = "Rolled back by the on-call; error rate back to normal (added in the e2e test).";

/// The files the services read their secrets from, in a directory removed on drop.
struct Secrets {
    directory: PathBuf,
    clients_file: PathBuf,
    client_secret_file: PathBuf,
    signing_key_file: PathBuf,
}

impl Secrets {
    /// The backend's OAuth clients file (internal-host's secret as a digest, its callback), the
    /// client secret and the credential signing key.
    fn write(host_url: &str) -> Self {
        let directory = std::env::temp_dir().join(format!(
            "e2e-assistant-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let digest: String = tokens::hash(CLIENT_SECRET)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let clients_file = directory.join("oauth-clients.json");
        std::fs::write(
            &clients_file,
            json!([{
                "client_id": "internal-host",
                "client_name": "Demo Monitoring assistant",
                "client_secret_sha256": digest,
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [format!("{host_url}/auth/callback")],
            }])
            .to_string(),
        )
        .unwrap();
        let client_secret_file = directory.join("internal-host-oauth-secret");
        std::fs::write(&client_secret_file, CLIENT_SECRET).unwrap();
        let signing_key_file = directory.join("internal-mcp-signing-key");
        std::fs::write(&signing_key_file, SIGNING_KEY).unwrap();
        Self {
            directory,
            clients_file,
            client_secret_file,
            signing_key_file,
        }
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn text_of(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `internal-host serve` on `listen`, with the host's role and schema bootstrapped first (as an
/// administrator does once), answering with the model at `model_url`; `extra` adds settings.
async fn start_internal_host(
    backend: &Backend,
    internal_mcp: &InternalMcp,
    secrets: &Secrets,
    listen: &str,
    model_url: &str,
    extra: &[(&str, &str)],
) -> Child {
    let sql = internal_host::database::bootstrap_sql(HOST_DATABASE_PASSWORD).unwrap();
    sqlx::raw_sql(&sql)
        .execute(&backend.database.pool)
        .await
        .unwrap();
    let options = &backend.database.connect_options;
    let database_url = format!(
        "postgres://internal_host:{HOST_DATABASE_PASSWORD}@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        backend.database.name
    );
    let public_url = format!("http://{listen}");
    let mut environment = vec![
        ("INTERNAL_HOST_DATABASE_URL", database_url.as_str()),
        ("INTERNAL_HOST_INTERNAL_MCP_URL", internal_mcp.url.as_str()),
        (
            "INTERNAL_MCP_SIGNING_KEY_FILE",
            text_of(&secrets.signing_key_file),
        ),
        ("INTERNAL_HOST_LISTEN", listen),
        ("INTERNAL_HOST_PUBLIC_URL", public_url.as_str()),
        ("INTERNAL_HOST_OAUTH_ISSUER", backend.url.as_str()),
        ("INTERNAL_HOST_OAUTH_CLIENT_ID", "internal-host"),
        (
            "INTERNAL_HOST_OAUTH_CLIENT_SECRET_FILE",
            text_of(&secrets.client_secret_file),
        ),
        ("INTERNAL_HOST_LLM_PROVIDER", "openai-compatible"),
        ("INTERNAL_HOST_LLM_BASE_URL", model_url),
        ("INTERNAL_HOST_LLM_MODEL", SCRIPTED_MODEL_NAME),
        ("INTERNAL_HOST_SKILLS", "false"),
        ("RUST_LOG", "warn"),
    ];
    environment.extend_from_slice(extra);
    let process = spawn(&binary("internal-host"), &["serve"], &environment);
    wait_until_ready(&format!("{public_url}/healthz"), Duration::from_secs(60))
        .await
        .expect("internal-host starts");
    process
}

/// The story incident's reference (`INC-<n>`), as the product's API lists it.
async fn story_incident(backend: &Backend, story: &Story) -> (String, i64) {
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/incidents?limit=200", backend.url))
        .bearer_auth(backend::token("acme", "responder"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let incident = listed["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .find(|incident| incident["title"] == story.incident_title)
        .unwrap_or_else(|| panic!("no incident titled {:?}: {listed}", story.incident_title));
    (
        incident["reference"].as_str().unwrap().to_owned(),
        incident["number"].as_i64().unwrap(),
    )
}

/// The story service's error rate, minute by minute, around the bad deploy.
fn error_rate_sql(story: &Story) -> String {
    let from = story.deployed_at - chrono::Duration::minutes(15);
    let until = story.spike_end + chrono::Duration::minutes(15);
    format!(
        "SELECT s.ts AS minute, s.value AS error_rate\n  FROM metric_samples s\n  \
         JOIN metric_series m ON m.id = s.series_id\n  JOIN services v ON v.id = m.service_id\n \
         WHERE v.name = '{}' AND m.name = 'error_rate'\n   AND s.ts >= '{}' AND s.ts < '{}'\n \
         ORDER BY s.ts",
        story.service,
        from.to_rfc3339(),
        until.to_rfc3339()
    )
}

/// Signs in on the product's pages, starting from the assistant's sign-in page.
async fn sign_in(browser: &Browser, host_url: &str) {
    browser.goto(host_url).await.unwrap();
    browser
        .wait_for_text("Sign in", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .find("#sign-in")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The product's sign-in page (its button is also `#sign-in`: wait for its fields).
    browser.find("#organization").await.unwrap();
    let page = browser.find("body").await.unwrap().text().await.unwrap();
    assert!(page.contains("Demo Monitoring assistant"), "{page}");
    let email = backend::email("acme", "responder");
    let password = backend::password("acme", "responder");
    for (field, value) in [
        ("#organization", "acme"),
        ("#email", email.as_str()),
        ("#password", password.as_str()),
    ] {
        browser
            .find(field)
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    browser
        .find("#sign-in")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.find("#allow").await.unwrap().click().await.unwrap();
    // Back at the assistant, signed in: the new-conversation form.
    browser.find("textarea#question").await.unwrap();
    let landed = browser.current_url().await.unwrap();
    assert_eq!(landed, format!("{host_url}/"));
}

/// Types `question` into the page's question box and sends it.
async fn ask(browser: &Browser, question: &str) {
    let input = browser.find("textarea#question").await.unwrap();
    input.send_keys(question).await.unwrap();
    browser.find("#ask").await.unwrap().click().await.unwrap();
}

/// Waits for a change's approval card; when it does not come, the failure says what the host had
/// (its turns' questions and statuses) and what the page shows, so it names its own cause: a
/// question that never became a turn, or a waiting turn the page did not show.
async fn wait_for_approval_card(browser: &Browser, backend: &Backend) {
    let Err(error) = browser
        .wait_for(".approval button.confirm", AGENT_WAIT)
        .await
    else {
        return;
    };
    let turns: Vec<(String, String)> =
        sqlx::query_as("SELECT question, status FROM internal_host.turns ORDER BY created_at")
            .fetch_all(&backend.database.pool)
            .await
            .unwrap_or_default();
    let form = contents(browser, ".form-status").await;
    let shown = contents(browser, "article.turn").await;
    panic!(
        "{error}\n  the host's turns: {turns:?}\n  the form says: {form:?}\n  the page shows: {shown:?}"
    );
}

/// The `textContent` of every element matching `css` (hidden ones too, such as the inside of a
/// closed `<details>`).
async fn contents(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);",
            vec![json!(css)],
        )
        .await
        .unwrap();
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|text| text.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The page as the browser holds it must not contain `secret`.
async fn assert_not_in_page(browser: &Browser, secret: &str, when: &str) {
    let source = browser.source().await.unwrap();
    assert!(
        !source.contains(secret),
        "the confirmation token is in the page {when}"
    );
}

/// The third step's checks, run again after the reload: everything of the first turn.
async fn assert_first_turn_shown(browser: &Browser, sql: &str, story: &Story, answer: &str) {
    let summaries = contents(browser, "details.trace summary").await;
    assert!(
        summaries.iter().any(|text| text.contains("run_select")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|text| text.contains("correlate_incident")),
        "{summaries:?}"
    );
    assert_eq!(contents(browser, "pre.sql").await, [sql]);
    let results = contents(browser, "details.trace pre.result").await;
    assert!(
        results
            .iter()
            .any(|result| result.contains(story.bad_version)),
        "the real correlation names the bad deploy: {results:?}"
    );
    // The SQL's rows are a time series: the trace draws them (correlate_incident's windows may
    // add a chart of their own).
    let charts = contents(browser, "figure.chart svg[aria-label=run_select]").await;
    assert_eq!(charts.len(), 1, "a chart of the SQL's rows");
    assert!(
        charts[0].contains("error_rate"),
        "the series' legend: {charts:?}"
    );
    let answers = contents(browser, ".answer").await;
    assert!(
        answers.iter().any(|text| text.contains(answer)),
        "{answers:?}"
    );
}

/// The backend (with internal-host's client registered), internal-mcp, and where the host will
/// listen; the seed's acme story and its incident.
struct Stack {
    host_listen: String,
    host_url: String,
    secrets: Secrets,
    backend: Backend,
    internal_mcp: InternalMcp,
    story: Story,
    reference: String,
    number: i64,
}

impl Stack {
    async fn start() -> Self {
        let host_listen = format!("127.0.0.1:{}", free_port());
        let host_url = format!("http://{host_listen}");
        let secrets = Secrets::write(&host_url);
        let backend =
            Backend::start_with(&["--oauth-clients-file", text_of(&secrets.clients_file)]).await;
        let internal_mcp = InternalMcp::start(&backend).await;
        let story = acme_story();
        let (reference, number) = story_incident(&backend, &story).await;
        Self {
            host_listen,
            host_url,
            secrets,
            backend,
            internal_mcp,
            story,
            reference,
            number,
        }
    }
}

#[tokio::test]
async fn a_person_asks_the_assistant_in_a_browser_confirms_a_note_and_stops_a_turn() {
    let started = Instant::now();
    let Stack {
        host_listen,
        host_url,
        secrets,
        backend,
        internal_mcp,
        story,
        reference,
        number,
    } = Stack::start().await;
    let sql = error_rate_sql(&story);
    let answer = format!(
        "The deploy of {} {} caused {reference}: the error rate rose three minutes after it \
         started and fell back once it was rolled back to {}.",
        story.service, story.bad_version, story.rollback_version
    );
    let confirmed_answer = format!("The note is on the timeline of {reference}.");
    let model = ScriptedModel::openai(vec![
        Reply::tool_call("internal-mcp__run_select", json!({ "sql": sql })),
        Reply::tool_call(
            "internal-mcp__correlate_incident",
            json!({ "incident": reference }),
        ),
        // Slow enough that the streamed text is seen before the turn's final rendering.
        Reply::text(answer.clone()).with_chunk_delay(Duration::from_millis(40)),
        Reply::tool_call(
            "internal-mcp__annotate_incident",
            json!({ "incident": reference, "note": NOTE }),
        ),
        Reply::text(confirmed_answer.clone()),
        Reply::stall(),
    ])
    .await;
    let _host = start_internal_host(
        &backend,
        &internal_mcp,
        &secrets,
        &host_listen,
        &model.url(),
        &[],
    )
    .await;
    println!("services up in {:?}", started.elapsed());

    let browser = Browser::start().await.expect("headless Chromium starts");
    let step = Instant::now();
    sign_in(&browser, &host_url).await;
    println!(
        "sign-in through the product's pages in Chromium: {:?}",
        step.elapsed()
    );

    // 1. The question: the answer streams in; the trace shows the tools, the SQL and a chart.
    let step = Instant::now();
    let question = format!("Which deploy caused {reference}?");
    ask(&browser, &question).await;
    browser
        .wait_for(".answer.live-text", AGENT_WAIT)
        .await
        .expect("the answer streams in as plain text");
    browser
        .wait_for("article.turn.status-completed", AGENT_WAIT)
        .await
        .unwrap();
    browser.wait_for_text(&answer, AGENT_WAIT).await.unwrap();
    let chat_url = browser.current_url().await.unwrap();
    assert!(
        chat_url.starts_with(&format!("{host_url}/conversations/")),
        "{chat_url}"
    );
    assert_first_turn_shown(&browser, &sql, &story, &answer).await;
    println!(
        "first answer (2 tool calls, 3 model calls) in Chromium: {:?}",
        step.elapsed()
    );

    // 2. A change: the approval card, Confirm, the model's closing text, the note once.
    let step = Instant::now();
    ask(&browser, &format!("Add a note to {reference}: {NOTE}")).await;
    wait_for_approval_card(&browser, &backend).await;
    let token: String = sqlx::query_scalar(
        "SELECT confirmation_token FROM internal_host.approvals WHERE status = 'pending'",
    )
    .fetch_one(&backend.database.pool)
    .await
    .unwrap();
    assert!(token.starts_with("imc_"), "a confirmation token is held");
    assert_not_in_page(&browser, &token, "with the approval card").await;
    let plan = contents(&browser, ".approval pre.plan").await;
    assert!(plan.iter().any(|text| text.contains(NOTE)), "{plan:?}");
    browser
        .click_when_ready(".approval button.confirm", AGENT_WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("You confirmed this change.", AGENT_WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(&confirmed_answer, AGENT_WAIT)
        .await
        .unwrap();
    browser
        .wait_for(
            "#turns > article.turn:nth-of-type(2).status-completed",
            AGENT_WAIT,
        )
        .await
        .unwrap();
    assert_not_in_page(&browser, &token, "after the confirmation").await;
    let incident: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/incidents/by-number/{number}",
            backend.url
        ))
        .bearer_auth(backend::token("acme", "responder"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let notes: Vec<&Value> = incident["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("{incident}"))
        .iter()
        .filter(|event| event["kind"] == "note" && event["body"] == NOTE)
        .collect();
    assert_eq!(notes.len(), 1, "the note is there exactly once: {incident}");
    assert_eq!(
        notes[0]["author"]["email"],
        backend::email("acme", "responder"),
        "the note is the person's own: {incident}"
    );
    println!(
        "approval round (plan, Confirm, closing answer) in Chromium: {:?}",
        step.elapsed()
    );

    // 3. A stalled answer, stopped.
    let step = Instant::now();
    let stalled_question = "And what about the other services?";
    ask(&browser, stalled_question).await;
    // Stop once the model streams the stalled answer (not while the turn still connects).
    let asked = Instant::now();
    while model.replies_left() > 0 {
        assert!(asked.elapsed() < AGENT_WAIT, "the model was never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    browser
        .click_when_ready(
            "#turns > article.turn:nth-of-type(3) .stop-button",
            AGENT_WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_for("article.turn.status-stopped", AGENT_WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("Stopped by the user.", AGENT_WAIT)
        .await
        .unwrap();
    model.wait_for_closed_streams(1).await;
    println!(
        "stop of a stalled answer, click to the model's stream closed: {:?}",
        step.elapsed()
    );

    // 4. A reload loses nothing.
    let step = Instant::now();
    browser.goto(&chat_url).await.unwrap();
    browser.find("article.turn.status-stopped").await.unwrap();
    let page = browser.find("#turns").await.unwrap().text().await.unwrap();
    for expected in [
        question.as_str(),
        &format!("Add a note to {reference}"),
        stalled_question,
        &confirmed_answer,
        "You confirmed this change.",
        "Stopped",
    ] {
        assert!(
            page.contains(expected),
            "{expected:?} after the reload:\n{page}"
        );
    }
    assert_first_turn_shown(&browser, &sql, &story, &answer).await;
    let summaries = contents(&browser, "details.trace summary").await;
    assert!(
        summaries
            .iter()
            .any(|text| text.contains("annotate_incident")),
        "{summaries:?}"
    );
    assert_eq!(
        browser
            .find_all("article.turn.status-completed")
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        browser
            .find_all(".approval button.confirm")
            .await
            .unwrap()
            .is_empty(),
        "a decided approval offers no buttons"
    );
    assert_not_in_page(&browser, &token, "after the reload").await;
    println!("reload with three turns: {:?}", step.elapsed());
    assert_eq!(model.replies_left(), 0, "the whole script was played");
    browser.close().await.unwrap();
    println!("whole browser test: {:?}", started.elapsed());
}

/// The investigation's status, as the host's table holds it.
async fn investigation_status(backend: &Backend, reference: &str) -> Option<(String, i32)> {
    sqlx::query_as(
        "SELECT status, mcp_calls FROM internal_host.investigations WHERE incident_reference = $1",
    )
    .bind(reference)
    .fetch_optional(&backend.database.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_person_reads_the_investigation_of_an_incident_and_continues_it_in_a_chat() {
    let started = Instant::now();
    let Stack {
        host_listen,
        host_url,
        secrets,
        backend,
        internal_mcp,
        story,
        reference,
        ..
    } = Stack::start().await;
    let reply = "The rollback is complete: the error rate is back at its baseline.";
    let model = ScriptedModel::openai(vec![Reply::text(reply)]).await;
    // AgenticOps as acme's service user, from just before the seeded story's incident.
    let (agent, opened_at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT u.organization_id || ':' || u.id, i.opened_at
           FROM users u JOIN organizations o ON o.id = u.organization_id
           JOIN incidents i ON i.organization_id = o.id
          WHERE o.slug = 'acme' AND u.email LIKE 'assistant@%' AND i.title = $1",
    )
    .bind(story.incident_title)
    .fetch_one(&backend.database.pool)
    .await
    .unwrap();
    let since = (opened_at - chrono::Duration::minutes(1)).to_rfc3339();
    let _host = start_internal_host(
        &backend,
        &internal_mcp,
        &secrets,
        &host_listen,
        &model.url(),
        &[
            ("INTERNAL_HOST_AGENTS", agent.as_str()),
            ("INTERNAL_HOST_INVESTIGATE_SINCE", since.as_str()),
            // The model's layer is tested in internal-host's investigations tests; here the
            // scripted model's one reply is for the chat.
            ("INTERNAL_HOST_INVESTIGATION_SYNTHESIS", "false"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mcp_calls = loop {
        match investigation_status(&backend, &reference).await {
            Some((status, calls)) if status == "completed" => break calls,
            Some((status, _)) if status == "failed" => panic!("the investigation failed"),
            _ if Instant::now() > deadline => panic!("no investigation of {reference} completed"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    println!(
        "services up and {reference} investigated in {:?}",
        started.elapsed()
    );

    let browser = Browser::start().await.expect("headless Chromium starts");
    sign_in(&browser, &host_url).await;
    browser
        .click_when_ready("#investigations-link", AGENT_WAIT)
        .await
        .unwrap();
    browser.find("table#investigations").await.unwrap();
    let link = browser
        .execute(
            "return Array.from(document.querySelectorAll('table#investigations a'))
                 .find(a => a.textContent.trim() === arguments[0]).getAttribute('href');",
            vec![json!(reference)],
        )
        .await
        .unwrap();
    let link = link
        .as_str()
        .unwrap_or_else(|| panic!("no row for {reference}: {link}"));
    browser
        .click_when_ready(&format!("a[href='{link}']"), AGENT_WAIT)
        .await
        .unwrap();
    browser.find("#report").await.unwrap();
    let cause = browser
        .find("#suspected-cause")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        cause.contains(story.service) && cause.contains(story.bad_version),
        "the report names the seeded bad deploy: {cause}"
    );
    let charts = browser.find_all("figure#key-metric svg").await.unwrap();
    assert_eq!(charts.len(), 1, "the key metric is drawn");
    let steps = browser.find_all("details.trace").await.unwrap().len();
    assert_eq!(steps as i32, mcp_calls, "every recorded MCP call is listed");
    let cited = contents(&browser, "#report a.cite").await;
    assert!(!cited.is_empty(), "claims cite their steps");
    for citation in &cited {
        let id = citation.trim_matches(['[', ']']);
        assert_eq!(
            browser
                .find_all(&format!("#step-{id}"))
                .await
                .unwrap()
                .len(),
            1,
            "citation {citation} points at a step"
        );
    }

    // Continue in a chat: the report comes along, the model answers.
    browser
        .find("textarea#question")
        .await
        .unwrap()
        .send_keys("Is the rollback complete?")
        .await
        .unwrap();
    browser
        .click_when_ready("#continue-in-chat", AGENT_WAIT)
        .await
        .unwrap();
    browser
        .wait_for("article.turn.status-completed", AGENT_WAIT)
        .await
        .unwrap();
    browser.wait_for_text(reply, AGENT_WAIT).await.unwrap();
    let turns = browser.find("#turns").await.unwrap().text().await.unwrap();
    assert!(
        turns.contains(&reference) && turns.contains("Is the rollback complete?"),
        "{turns}"
    );
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .starts_with(&format!("{host_url}/conversations/"))
    );
    assert_eq!(model.replies_left(), 0);
    browser.close().await.unwrap();
    println!("whole investigation browser test: {:?}", started.elapsed());
}

/// The tool results the model got in the last request, in the order of its calls.
fn results_the_model_got(model: &ScriptedModel) -> Vec<String> {
    let requests = model.requests();
    let last = requests.last().expect("the model was called");
    last.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The parity of the two faces, inside the assistant: with an `mcpServers` file giving it both
/// internal-mcp (the person's own internal credential) and the real external-mcp over stdio (an
/// API token of the person's organisation), the same question gets the same open incidents and
/// the same bad deploy from both servers, and the trace shows each server's calls.
#[tokio::test]
async fn the_assistant_asks_both_servers_the_same_question_and_they_agree() {
    let Stack {
        host_listen,
        host_url,
        secrets,
        backend,
        internal_mcp,
        story,
        reference,
        ..
    } = Stack::start().await;
    let organization: String =
        sqlx::query_scalar("SELECT id::text FROM organizations WHERE slug = 'acme'")
            .fetch_one(&backend.database.pool)
            .await
            .unwrap();
    let servers_file = secrets.directory.join("mcp-servers.json");
    std::fs::write(
        &servers_file,
        json!({"mcpServers": {
            "internal-mcp": {"url": internal_mcp.url, "credentials": "internal"},
            "external": {
                "command": binary("external-mcp"),
                "env": {
                    "DEMO_API_URL": backend.url,
                    "DEMO_API_TOKEN": "${env:E2E_ACME_TOKEN}",
                    "RUST_LOG": "warn",
                },
                "organization": organization,
            },
        }})
        .to_string(),
    )
    .unwrap();
    let model = ScriptedModel::openai(vec![
        Reply::tool_calls(vec![
            (
                "internal-mcp__run_select",
                json!({"sql": "SELECT 'INC-' || number AS reference FROM incidents WHERE status = 'open' ORDER BY number"}),
            ),
            ("external__list_incidents", json!({"status": "open"})),
            (
                "internal-mcp__correlate_incident",
                json!({"incident": reference}),
            ),
            (
                "external__list_deployments",
                json!({"service": story.service, "status": "rolled_back"}),
            ),
        ]),
        Reply::text("Both servers name the same open incidents and the same rolled-back deploy."),
    ])
    .await;
    let token = backend::token("acme", "responder");
    let _host = start_internal_host(
        &backend,
        &internal_mcp,
        &secrets,
        &host_listen,
        &model.url(),
        &[
            ("INTERNAL_HOST_MCP_SERVERS", text_of(&servers_file)),
            ("E2E_ACME_TOKEN", token.as_str()),
        ],
    )
    .await;

    let browser = Browser::start().await.expect("headless Chromium starts");
    sign_in(&browser, &host_url).await;
    ask(
        &browser,
        &format!("Which incidents are open, and which deploy caused {reference}?"),
    )
    .await;
    browser
        .wait_for("article.turn.status-completed", AGENT_WAIT)
        .await
        .unwrap();
    let summaries = contents(&browser, "details.trace summary").await;
    for tool in [
        "run_select",
        "list_incidents",
        "correlate_incident",
        "list_deployments",
    ] {
        assert!(
            summaries.iter().any(|text| text.contains(tool)),
            "{tool} in the trace: {summaries:?}"
        );
    }
    assert!(
        summaries.iter().any(|text| text.contains("external")),
        "{summaries:?}"
    );
    assert_not_in_page(
        &browser,
        &token,
        "with external-mcp's token in its environment",
    )
    .await;

    // Ground truth from the REST API; each server's answer, as the model read it, must match it.
    let listed: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/incidents?status=open&limit=200",
            backend.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let open: Vec<String> = listed["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|incident| incident["reference"].as_str().unwrap().to_owned())
        .collect();
    assert!(!open.is_empty(), "{listed}");
    let results = results_the_model_got(&model);
    assert_eq!(results.len(), 4, "{results:?}");
    // "INC-6" and not only "INC-60": the next character is not a digit (JSON rows or text lines).
    let mentions = |text: &str, reference: &str| {
        text.match_indices(reference).any(|(at, _)| {
            !text[at + reference.len()..].starts_with(|next: char| next.is_ascii_digit())
        })
    };
    for (index, face) in [
        (0, "internal-mcp run_select"),
        (1, "external list_incidents"),
    ] {
        for reference in &open {
            assert!(
                mentions(&results[index], reference),
                "{face} misses {reference}: {}",
                results[index]
            );
        }
    }
    assert!(
        results[2].contains(story.bad_version),
        "internal-mcp's correlation: {}",
        results[2]
    );
    assert!(
        results[3].contains(story.bad_version),
        "external-mcp's rolled-back deploys: {}",
        results[3]
    );
}
