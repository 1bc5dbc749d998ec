//! Privileged operations: offered only to responders and admins, executed through the domain
//! layer, and only in two calls. The confirmation cannot be skipped, replayed, used by another user
//! or for other arguments, or used after it expired.

use std::time::Duration;

use internal_mcp::config::Endpoint;
use internal_mcp::operations::CONFIRMATION_META_KEY;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Client, TestApp, call, database_fingerprint, failure, success, text};

/// The service whose alerts the tests acknowledge: the one with a firing, unacknowledged alert.
async fn service_with_unacknowledged_alerts(app: &TestApp, slug: &str) -> String {
    let organization = app.organization_id(slug).await;
    sqlx::query_scalar(
        "SELECT s.name FROM alerts a JOIN services s ON s.id = a.service_id
          WHERE a.organization_id = $1 AND a.state = 'firing' AND a.acknowledged_at IS NULL
          ORDER BY s.name LIMIT 1",
    )
    .bind(organization)
    .fetch_one(app.pool())
    .await
    .expect("the seed leaves an unacknowledged firing alert")
}

async fn unacknowledged(app: &TestApp, service: &str, slug: &str) -> Vec<Uuid> {
    let organization = app.organization_id(slug).await;
    sqlx::query_scalar(
        "SELECT a.id FROM alerts a JOIN services s ON s.id = a.service_id
          WHERE a.organization_id = $1 AND s.name = $2 AND a.state = 'firing' AND a.acknowledged_at IS NULL
          ORDER BY a.id",
    )
    .bind(organization)
    .bind(service)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

/// The plan and its token. The token travels only in the result's `_meta`: neither the structured
/// content nor the text a model reads carries it.
async fn plan(client: &Client, tool: &str, arguments: Value) -> (Value, String) {
    let result = call(client, tool, arguments).await;
    let planned = success(&result);
    assert_eq!(planned["status"], "confirmation_required", "{planned}");
    let meta = result.meta.as_ref().expect("a plan carries _meta");
    let confirmation = &meta.0[CONFIRMATION_META_KEY];
    assert_eq!(confirmation["tool"], tool);
    assert!(confirmation["expires_at"].is_string(), "{confirmation}");
    let token = confirmation["token"].as_str().unwrap().to_owned();
    assert!(planned.get("confirmation_token").is_none(), "{planned}");
    assert!(!planned.to_string().contains(&token));
    assert!(!text(&result).contains(&token), "the token is in the text");
    (planned, token)
}

fn with_token(mut arguments: Value, token: &str) -> Value {
    arguments["confirmation_token"] = json!(token);
    arguments
}

#[tokio::test]
async fn acknowledging_takes_a_plan_and_a_confirmation() {
    let app = TestApp::spawn().await;
    let service = service_with_unacknowledged_alerts(&app, "acme").await;
    let pending = unacknowledged(&app, &service, "acme").await;
    let marcus = app.user("acme", "marcus").await;
    let client = app.client(Endpoint::Incidents, "acme", "marcus").await;
    let arguments = json!({ "service": service });

    // Skipping the plan with an invented token changes nothing.
    let before = database_fingerprint(app.pool()).await;
    let invented = failure(
        &call(
            &client,
            "acknowledge_service_alerts",
            with_token(arguments.clone(), "imc_invented"),
        )
        .await,
    );
    assert!(
        invented.contains("unknown confirmation token"),
        "{invented}"
    );

    // The first call plans, and still changes nothing.
    let (planned, token) = plan(&client, "acknowledge_service_alerts", arguments.clone()).await;
    let planned_ids: Vec<Uuid> =
        serde_json::from_value(planned["plan"]["alert_ids"].clone()).unwrap();
    assert_eq!(planned_ids, pending);
    assert!(token.starts_with("imc_"));
    let mut after_plan = database_fingerprint(app.pool()).await;
    after_plan.retain(|(table, _, _)| table != "internal_mcp_confirmations");
    let mut before_without_confirmations = before.clone();
    before_without_confirmations.retain(|(table, _, _)| table != "internal_mcp_confirmations");
    assert_eq!(
        before_without_confirmations, after_plan,
        "planning must not change anything"
    );

    // The second call executes exactly the plan, as marcus.
    let done = success(
        &call(
            &client,
            "acknowledge_service_alerts",
            with_token(arguments.clone(), &token),
        )
        .await,
    );
    assert_eq!(done["status"], "done");
    // The change's audit record was written before its caller heard of it (no flush here).
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM internal_mcp_audit_log
          WHERE user_id = $1 AND tool = 'acknowledge_service_alerts' ORDER BY id",
    )
    .bind(marcus.id)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        recorded,
        ["error", "ok", "ok"],
        "invented token, plan, confirmation"
    );
    let acknowledged: Vec<Uuid> =
        serde_json::from_value(done["acknowledged_alert_ids"].clone()).unwrap();
    let mut acknowledged_sorted = acknowledged.clone();
    acknowledged_sorted.sort();
    assert_eq!(acknowledged_sorted, pending);
    assert!(unacknowledged(&app, &service, "acme").await.is_empty());
    let by: Vec<Option<Uuid>> =
        sqlx::query_scalar("SELECT acknowledged_by FROM alerts WHERE id = ANY ($1)")
            .bind(&pending)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert!(by.iter().all(|user| *user == Some(marcus.id)));

    // The token works once.
    let replayed = failure(
        &call(
            &client,
            "acknowledge_service_alerts",
            with_token(arguments, &token),
        )
        .await,
    );
    assert!(replayed.contains("already used"), "{replayed}");
}

#[tokio::test]
async fn a_confirmation_belongs_to_one_user_one_tool_and_one_set_of_arguments() {
    let app = TestApp::spawn().await;
    let story = crate::support::story("acme");
    let number: i32 = sqlx::query_scalar("SELECT number FROM incidents WHERE title = $1")
        .bind(story.incident_title)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let marcus = app.client(Endpoint::All, "acme", "marcus").await;
    let priya = app.client(Endpoint::All, "acme", "priya").await;
    let mei = app.client(Endpoint::All, "globex", "mei").await;
    let arguments = json!({"incident": format!("INC-{number}"), "note": "Rollback confirmed by the on-call engineer"});
    let (planned, token) = plan(&marcus, "annotate_incident", arguments.clone()).await;
    assert_eq!(
        planned["plan"]["note"],
        "Rollback confirmed by the on-call engineer"
    );
    let notes_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM incident_events WHERE kind = 'note'")
            .fetch_one(app.pool())
            .await
            .unwrap();

    // Another user of the same organisation, and a user of another organisation.
    for (other, name) in [(&priya, "priya"), (&mei, "mei")] {
        let refused = failure(
            &call(
                other,
                "annotate_incident",
                with_token(arguments.clone(), &token),
            )
            .await,
        );
        assert!(
            refused.contains("issued to another user"),
            "{name}: {refused}"
        );
    }
    // The same user with changed arguments, or with the token of another tool.
    let changed = with_token(
        json!({"incident": format!("INC-{number}"), "note": "Something else entirely"}),
        &token,
    );
    assert!(
        failure(&call(&marcus, "annotate_incident", changed).await).contains("arguments differ")
    );
    let other_tool = call(
        &marcus,
        "silence_monitor",
        json!({"monitor": "x", "minutes": 5, "confirmation_token": token}),
    )
    .await;
    assert!(failure(&other_tool).contains("confirms annotate_incident, not silence_monitor"));
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM incident_events WHERE kind = 'note'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(still, notes_before, "no refused attempt may add the note");

    // The refusals did not use the token up: the right user with the right arguments succeeds.
    let done = success(&call(&marcus, "annotate_incident", with_token(arguments, &token)).await);
    assert_eq!(done["event"]["kind"], "note");
    assert_eq!(done["event"]["author"]["name"], "Marcus Oyelaran");
}

#[tokio::test]
async fn an_expired_confirmation_is_refused() {
    let app =
        TestApp::spawn_with(|config| config.confirmation_lifetime = Duration::from_secs(1)).await;
    let client = app.client(Endpoint::Incidents, "acme", "marcus").await;
    let monitor: String =
        sqlx::query_scalar("SELECT name FROM monitors WHERE name = 'storefront-web traffic surge'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let arguments = json!({"monitor": monitor, "minutes": 60});
    let (_, token) = plan(&client, "silence_monitor", arguments.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = failure(&call(&client, "silence_monitor", with_token(arguments, &token)).await);
    assert!(expired.contains("expired"), "{expired}");
    let silenced: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT silenced_until FROM monitors WHERE name = $1")
            .bind(&monitor)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(silenced.is_none());
}

#[tokio::test]
async fn silencing_and_transitions_go_through_the_domain_layer() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Incidents, "acme", "dana").await;

    let arguments = json!({"monitor": "storefront-web traffic surge", "minutes": 90});
    let (planned, token) = plan(&client, "silence_monitor", arguments.clone()).await;
    assert_eq!(planned["plan"]["service"], "storefront-web");
    let done = success(&call(&client, "silence_monitor", with_token(arguments, &token)).await);
    let until = crate::support::time(&done["monitor"]["silenced_until"]);
    let expected = chrono::Utc::now() + chrono::Duration::minutes(90);
    assert!((until - expected).num_seconds().abs() < 60, "{until}");

    // Resolving the open incident: the domain layer records the change with its author.
    let open: i32 = sqlx::query_scalar(
        "SELECT number FROM incidents i JOIN organizations o ON o.id = i.organization_id
          WHERE o.slug = 'acme' AND i.status = 'open'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    let arguments = json!({"incident": format!("INC-{open}"), "action": "resolve", "note": "Index merge rolled back"});
    let (planned, token) = plan(&client, "transition_incident", arguments.clone()).await;
    assert_eq!(planned["plan"]["from"], "open");
    assert_eq!(planned["plan"]["to"], "resolved");
    let done = success(
        &call(
            &client,
            "transition_incident",
            with_token(arguments, &token),
        )
        .await,
    );
    assert_eq!(done["incident"]["status"], "resolved");
    let last = done["incident"]["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "resolved");
    assert_eq!(last["body"], "Index merge rolled back");

    // The lifecycle's rules hold: a resolved incident cannot be acknowledged; no token is issued.
    let illegal = call(
        &client,
        "transition_incident",
        json!({"incident": format!("INC-{open}"), "action": "acknowledge"}),
    )
    .await;
    assert!(failure(&illegal).contains("resolved incidents cannot change status"));
}

#[tokio::test]
async fn viewers_can_neither_see_nor_call_privileged_tools() {
    let app = TestApp::spawn().await;
    let service = service_with_unacknowledged_alerts(&app, "acme").await;
    let before = database_fingerprint(app.pool()).await;
    let sam = app.client(Endpoint::All, "acme", "sam").await;
    for (tool, arguments) in [
        ("acknowledge_service_alerts", json!({"service": service})),
        (
            "annotate_incident",
            json!({"incident": "INC-1", "note": "hello"}),
        ),
        (
            "silence_monitor",
            json!({"monitor": "storefront-web traffic surge", "minutes": 5}),
        ),
        (
            "transition_incident",
            json!({"incident": "INC-1", "action": "resolve"}),
        ),
    ] {
        let refused = failure(&call(&sam, tool, arguments).await);
        assert!(
            refused.contains("requires the responder role; your role is viewer"),
            "{tool}: {refused}"
        );
    }
    let responder = app.client(Endpoint::All, "acme", "marcus").await;
    let refused = failure(&call(&responder, "audit_log", json!({})).await);
    assert!(refused.contains("requires the admin role"), "{refused}");
    assert_eq!(before, database_fingerprint(app.pool()).await);
}

/// One mechanism for every two-step tool: the token binds the whole arguments, so changing any one
/// of them between the plan and the confirmation is refused, for every tool that
/// declares two steps. A tool added later without a row here fails the test.
#[tokio::test]
async fn changing_any_argument_between_plan_and_confirmation_is_refused_for_every_two_step_tool() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::All, "acme", "dana").await;
    let service = service_with_unacknowledged_alerts(&app, "acme").await;
    let open: i32 = sqlx::query_scalar(
        "SELECT number FROM incidents i JOIN organizations o ON o.id = i.organization_id
          WHERE o.slug = 'acme' AND i.status = 'open'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    let incident = format!("INC-{open}");
    let cases = [
        ("acknowledge_service_alerts", json!({ "service": service })),
        (
            "annotate_incident",
            json!({ "incident": incident, "note": "Checked the dashboards" }),
        ),
        (
            "silence_monitor",
            json!({ "monitor": "storefront-web traffic surge", "minutes": 90 }),
        ),
        (
            "transition_incident",
            json!({ "incident": incident, "action": "acknowledge", "note": "On it" }),
        ),
    ];

    let mut two_step: Vec<String> =
        internal_mcp::server::InternalMcpServer::tools_for(Endpoint::All)
            .list_all()
            .iter()
            .filter(|tool| {
                internal_mcp::policy::policy_of(tool).is_some_and(|policy| policy.two_step)
            })
            .map(|tool| tool.name.to_string())
            .collect();
    two_step.sort();
    let mut covered: Vec<String> = cases.iter().map(|(tool, _)| (*tool).to_owned()).collect();
    covered.sort();
    assert_eq!(two_step, covered, "every two-step tool needs a case here");

    // Plans add confirmations, by design; nothing else may change.
    let fingerprint = async || {
        let mut tables = database_fingerprint(app.pool()).await;
        tables.retain(|(table, _, _)| table != "internal_mcp_confirmations");
        tables
    };
    let before = fingerprint().await;
    for (tool, arguments) in &cases {
        let (_, token) = plan(&client, tool, arguments.clone()).await;
        let mut changes: Vec<Value> = Vec::new();
        for (name, value) in arguments.as_object().unwrap() {
            let mut changed = arguments.clone();
            changed[name] = match value {
                Value::Number(number) => json!(number.as_u64().unwrap() + 1),
                Value::String(text) if name == "action" => json!(if text == "acknowledge" {
                    "resolve"
                } else {
                    "acknowledge"
                }),
                Value::String(text) => json!(format!("{text} ")),
                other => panic!("no change planned for {other}"),
            };
            changes.push(changed);
        }
        for changed in changes {
            let refused = call(&client, tool, with_token(changed.clone(), &token)).await;
            let message = failure(&refused);
            assert!(
                message.contains("arguments differ"),
                "{tool} with {changed}: {message}"
            );
        }
    }
    assert_eq!(
        before,
        fingerprint().await,
        "a refused confirmation changed something"
    );
}

#[tokio::test]
async fn plans_are_rate_limited_per_user() {
    let app = TestApp::spawn().await;
    let dana = app.client(Endpoint::Incidents, "acme", "dana").await;
    let arguments = json!({"monitor": "storefront-web traffic surge", "minutes": 5});
    for _ in 0..internal_mcp::operations::MAX_PLANS_PER_MINUTE {
        plan(&dana, "silence_monitor", arguments.clone()).await;
    }
    let refused = failure(&call(&dana, "silence_monitor", arguments.clone()).await);
    assert!(refused.contains("too many plans"), "{refused}");
    // Another user is not affected.
    let marcus = app.client(Endpoint::Incidents, "acme", "marcus").await;
    plan(&marcus, "silence_monitor", arguments).await;
}
