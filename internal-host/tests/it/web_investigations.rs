//! The Investigations pages over real HTTP with a browser signed in through the product: the
//! list, one investigation with its report, the key metric's chart and its recorded steps, the
//! "continue in chat" form, and what another organisation and hostile incident text get. The
//! investigation is written as the worker writes it (the worker itself is tested against the real
//! internal-mcp in `investigations.rs`).

use chrono::{Duration, Utc};
use internal_host::investigations::{Claim, Report, SuspectedCause};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::web_support::WebApp;

const HOSTILE_TITLE: &str = "<script>alert('x')</script> checkout errors";

/// An investigation of `acme` as a finished run leaves it; returns (investigation, incident,
/// the chart step's id).
pub(crate) async fn finished_investigation(
    host: &PgPool,
    organization_id: Uuid,
) -> (Uuid, Uuid, i64) {
    let (id, incident_id) = (Uuid::new_v4(), Uuid::new_v4());
    let opened_at = Utc::now() - Duration::hours(1);
    sqlx::query(
        "INSERT INTO investigations (id, organization_id, incident_id, incident_reference,
            incident_opened_at, services, correlation_id, status, attempts, max_attempts,
            note_status, mcp_calls, started_at, finished_at)
         VALUES ($1, $2, $3, 'INC-77', $4, '{checkout-api}', $5, 'completed', 1, 3, 'posted', 2,
            now() - interval '1500 milliseconds', now())",
    )
    .bind(id)
    .bind(organization_id)
    .bind(incident_id)
    .bind(opened_at)
    .bind(Uuid::new_v4())
    .execute(host)
    .await
    .unwrap();
    let step = |name: &str, tool: &str, arguments: serde_json::Value, result: serde_json::Value| {
        let (name, tool) = (name.to_owned(), tool.to_owned());
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO investigation_steps (investigation_id, attempt, name, tool, arguments,
                    status, summary, result, duration_ms)
                 VALUES ($1, 1, $2, $3, $4, 'ok', $5, $6, 12) RETURNING id",
            )
            .bind(id)
            .bind(&name)
            .bind(&tool)
            .bind(arguments)
            .bind(format!("{tool}: {HOSTILE_TITLE}"))
            .bind(result)
            .fetch_one(host)
            .await
            .unwrap()
        }
    };
    let incident_step = step(
        "incident",
        "get_incident",
        json!({"incident": incident_id}),
        json!({"incident": {"reference": "INC-77", "title": HOSTILE_TITLE}}),
    )
    .await;
    let at = |minutes: i64| (opened_at + Duration::minutes(minutes)).to_rfc3339();
    let chart_step = step(
        "key_metric",
        "run_select",
        json!({"sql": "SELECT ... WHERE v.name = 'checkout-api' AND m.name = 'error_rate' ..."}),
        json!({
            "columns": ["at", "error_rate"],
            "rows": [[at(-10), 0.01], [at(-5), 0.012], [at(0), 0.21], [at(5), 0.24]],
        }),
    )
    .await;
    let claim = |text: &str, cites: &[i64]| Claim {
        text: text.to_owned(),
        cites: cites.to_vec(),
    };
    let report = Report {
        incident: "INC-77".into(),
        title: format!("INC-77: {HOSTILE_TITLE}"),
        generated_by: "playbook".into(),
        what_is_going_on: vec![claim(
            "checkout-api's error rate left its baseline 2 minutes after deploy v9.9.9.",
            &[incident_step, chart_step],
        )],
        suspected_cause: Some(SuspectedCause {
            service: "checkout-api".into(),
            version: "v9.9.9".into(),
            deployment_id: Uuid::new_v4(),
            deployment_status: "rolled_back".into(),
            started_at: opened_at - Duration::minutes(4),
            confidence: "high".into(),
            claim: claim(
                "v9.9.9 preceded the spike on the affected service.",
                &[chart_step],
            ),
            rules: vec![],
        }),
        anomaly_windows: vec![],
        evidence: vec![claim(
            "<img src=x onerror=alert(1)> in an alert name",
            &[incident_step],
        )],
        ruled_out: vec![],
        next_steps: vec![claim("Check that the rollback finished.", &[incident_step])],
        dropped_claims: 1,
        synthesis: None,
    };
    let mut stored = serde_json::to_value(&report).unwrap();
    stored["note"] = json!({"outcome": "posted", "text": "..."});
    sqlx::query("UPDATE investigations SET report = $2 WHERE id = $1")
        .bind(id)
        .bind(stored)
        .execute(host)
        .await
        .unwrap();
    (id, incident_id, chart_step)
}

pub(crate) async fn organization_id(product: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_one(product)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_investigations_pages_show_report_chart_and_steps_to_the_organisation_only() {
    let app = WebApp::start().await;
    let acme = organization_id(app.product(), "acme").await;
    let (id, incident_id, chart_step) = finished_investigation(app.host(), acme).await;
    let marcus = app.signed_in("acme", "marcus").await;

    let front = marcus.get("/").await.text().await.unwrap();
    assert!(
        front.contains("href=\"/investigations\""),
        "the sidebar links the list"
    );
    let list = marcus.get("/investigations").await;
    assert_eq!(list.status(), StatusCode::OK);
    let list = list.text().await.unwrap();
    assert!(
        list.contains(&format!("href=\"/investigations/{id}\"")),
        "{list}"
    );
    assert!(list.contains("INC-77") && list.contains("completed") && list.contains("1.5 s"));

    for path in [
        format!("/investigations/{id}"),
        format!("/investigations/{incident_id}"),
    ] {
        let page = marcus.get(&path).await;
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let html = page.text().await.unwrap();
        assert!(html.contains("checkout-api v9.9.9"), "the cause: {html}");
        assert!(html.contains("confidence <strong class=\"confidence\">high"));
        assert!(
            html.contains("<svg class=\"chart\""),
            "the key metric is drawn"
        );
        assert!(
            html.contains("error_rate of checkout-api"),
            "the chart's title"
        );
        assert!(
            html.contains(&format!("href=\"#step-{chart_step}\"")),
            "claims cite steps"
        );
        assert!(
            html.contains(&format!("id=\"step-{chart_step}\"")),
            "steps are anchors"
        );
        assert!(html.contains("1 claim(s) citing nothing were dropped"));
        assert!(html.contains("Timeline note: posted"));
        assert!(!html.contains("<script>alert"), "incident text is inert");
        assert!(!html.contains("<img src=x"), "claims are inert");
        assert!(
            html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
            "{html}"
        );
    }

    let olivia = app.signed_in("globex", "olivia").await;
    let other = olivia.get(&format!("/investigations/{id}")).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert!(!other.text().await.unwrap().contains("INC-77"));
    assert!(
        !olivia
            .get("/investigations")
            .await
            .text()
            .await
            .unwrap()
            .contains("INC-77")
    );
    let refused = olivia
        .post(
            &format!("/investigations/{id}/chat"),
            &[("csrf", olivia.csrf.as_str())],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        marcus.get("/investigations/not-an-id").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_investigation_continues_in_a_chat_that_carries_its_report() {
    let app = WebApp::start().await;
    let acme = organization_id(app.product(), "acme").await;
    let (id, _, _) = finished_investigation(app.host(), acme).await;
    let marcus = app.signed_in("acme", "marcus").await;
    let path = format!("/investigations/{id}/chat");

    let forged = marcus.post(&path, &[("question", "is it over?")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let too_long = "x".repeat(20_000);
    let long = marcus
        .post(
            &path,
            &[("csrf", marcus.csrf.as_str()), ("question", &too_long)],
        )
        .await;
    assert_eq!(long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let conversations: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(app.host())
        .await
        .unwrap();
    assert_eq!(conversations, 0, "refused forms start nothing");

    let landed = marcus
        .post(
            &path,
            &[
                ("csrf", marcus.csrf.as_str()),
                ("question", "Is the rollback done?"),
            ],
        )
        .await;
    assert_eq!(landed.status(), StatusCode::OK);
    let conversation = landed
        .url()
        .path()
        .strip_prefix("/conversations/")
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("landed on {}", landed.url()));
    Uuid::parse_str(&conversation).unwrap();
    let turn = app.last_turn(Uuid::parse_str(&conversation).unwrap()).await;
    app.settled(turn).await;
    let (user, question) = app.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(user.organization_id, acme);
    assert!(question.contains("INC-77"), "{question}");
    assert!(question.contains("checkout-api v9.9.9"), "{question}");
    assert!(
        question.contains("Check that the rollback finished."),
        "{question}"
    );
    assert!(question.ends_with("Is the rollback done?"), "{question}");
}
