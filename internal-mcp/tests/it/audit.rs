//! The audit trail: every call is recorded with who, what, the SQL, rows, duration and outcome,
//! secrets redacted, and admins read only their own organisation's trail.

use internal_mcp::config::Endpoint;
use serde_json::json;

use crate::support::{TestApp, call, failure, story, success};

#[tokio::test]
async fn every_call_is_recorded_and_admins_read_their_own_organisations_trail() {
    let app = TestApp::spawn().await;
    let sam = app.user("acme", "sam").await;
    let viewer = app.client(Endpoint::Sql, "acme", "sam").await;
    success(
        &call(
            &viewer,
            "run_select",
            json!({"sql": "SELECT name FROM services ORDER BY name LIMIT 3"}),
        )
        .await,
    );
    failure(
        &call(
            &viewer,
            "run_select",
            json!({"sql": "SELECT * FROM api_tokens"}),
        )
        .await,
    );
    let incidents = app.client(Endpoint::All, "acme", "sam").await;
    failure(
        &call(
            &incidents,
            "silence_monitor",
            json!({"monitor": "x", "minutes": 5}),
        )
        .await,
    );
    let responder = app.client(Endpoint::Incidents, "acme", "marcus").await;
    failure(
        &call(
            &responder,
            "silence_monitor",
            json!({"monitor": "x", "minutes": 5, "confirmation_token": "imc_secret_value"}),
        )
        .await,
    );

    // Reads are recorded off the calls' path, moments later.
    app.state.audit().flush().await;
    let (tool, endpoint, role, sql, rows, outcome, duration): (String, String, String, Option<String>, Option<i64>, String, f64) =
        sqlx::query_as(
            "SELECT tool, endpoint, role::text, sql_text, rows_returned, outcome, duration_ms
               FROM internal_mcp_audit_log WHERE user_id = $1 AND outcome = 'ok' AND tool = 'run_select'",
        )
        .bind(sam.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(
        (tool.as_str(), endpoint.as_str(), role.as_str()),
        ("run_select", "sql", "viewer")
    );
    assert_eq!(
        sql.as_deref(),
        Some("SELECT name FROM services ORDER BY name LIMIT 3")
    );
    assert_eq!(rows, Some(3));
    assert_eq!(outcome, "ok");
    assert!(duration > 0.0);

    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT tool, message FROM internal_mcp_audit_log WHERE user_id = $1 AND outcome = 'error' ORDER BY id",
    )
    .bind(sam.id)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(refused.len(), 2);
    assert!(
        refused[0]
            .1
            .contains("permission denied for table api_tokens"),
        "{refused:?}"
    );
    assert!(
        refused[1].1.contains("requires the responder role"),
        "{refused:?}"
    );

    let redacted: serde_json::Value = sqlx::query_scalar(
        "SELECT arguments FROM internal_mcp_audit_log WHERE tool = 'silence_monitor' AND role = 'responder'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(redacted["confirmation_token"], "[redacted]");

    // The admin reads the trail through the tool, newest first, filtered.
    let dana = app.client(Endpoint::Incidents, "acme", "dana").await;
    let trail = success(
        &call(
            &dana,
            "audit_log",
            json!({"user_email": "sam@acme.example"}),
        )
        .await,
    );
    let records = trail["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{trail}");
    assert_eq!(records[2]["tool"], "run_select");
    // What the user sent comes back apart, marked as untrusted content.
    assert_eq!(
        records[2]["untrusted"]["sql_text"],
        "SELECT name FROM services ORDER BY name LIMIT 3"
    );
    assert!(records[2].get("sql_text").is_none());
    assert!(
        trail["notice"]
            .as_str()
            .unwrap()
            .contains("untrusted content"),
        "{trail}"
    );
    let errors = success(
        &call(
            &dana,
            "audit_log",
            json!({"outcome": "error", "tool": "run_select"}),
        )
        .await,
    );
    assert_eq!(errors["records"].as_array().unwrap().len(), 1);

    // Globex's admin sees none of it.
    let olivia = app.client(Endpoint::Incidents, "globex", "olivia").await;
    let theirs = success(&call(&olivia, "audit_log", json!({})).await);
    for record in theirs["records"].as_array().unwrap() {
        assert_ne!(
            record["user_email"].as_str().unwrap_or_default(),
            "sam@acme.example"
        );
        assert!(
            !record["user_email"]
                .as_str()
                .unwrap_or_default()
                .ends_with("acme.example"),
            "{record}"
        );
    }
}

#[tokio::test]
async fn old_records_and_expired_confirmations_are_purged_and_oversized_arguments_cut() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let long_sql = format!("SELECT '{}' AS filler", "x".repeat(60_000));
    call(&client, "run_select", json!({ "sql": long_sql })).await;
    app.state.audit().flush().await;
    let (arguments_bytes, sql_bytes): (i32, i32) = sqlx::query_as(
        "SELECT octet_length(arguments::text), octet_length(sql_text) FROM internal_mcp_audit_log
          WHERE tool = 'run_select' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(
        arguments_bytes < 20_000,
        "{arguments_bytes} bytes of arguments stored"
    );
    assert!(sql_bytes < 20_000, "{sql_bytes} bytes of SQL stored");

    let dana = app.user("acme", "dana").await;
    sqlx::query(
        "UPDATE internal_mcp_audit_log SET at = now() - interval '200 days' WHERE id = (SELECT min(id) FROM internal_mcp_audit_log)",
    )
    .execute(app.pool())
    .await
    .unwrap();
    for (hash, expires) in [
        (1u8, "now() - interval '2 hours'"),
        (2u8, "now() + interval '5 minutes'"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO internal_mcp_confirmations (token_hash, organization_id, user_id, tool, arguments_digest, plan, created_at, expires_at)
             VALUES ($1, $2, $3, 'silence_monitor', $4, '{{}}', {expires} - interval '5 minutes', {expires})"
        ))
        .bind(vec![hash; 32])
        .bind(dana.organization_id)
        .bind(dana.id)
        .bind(vec![0u8; 32])
        .execute(app.pool())
        .await
        .unwrap();
    }
    let (records, confirmations) = app
        .state
        .audit()
        .purge(std::time::Duration::from_secs(90 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!((records, confirmations), (1, 1));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM internal_mcp_confirmations")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(left, 1, "the live confirmation stays");
}

/// Every tool reports what it returned through its result, and nothing of that report reaches the
/// client. The table of arguments must name every tool the server lists, so a new tool comes with
/// a call here, and a tool that forgot to report would have its result withheld.
#[tokio::test]
async fn every_tool_reports_its_rows_to_the_trail_through_its_result() {
    let app = TestApp::spawn().await;
    let story = story("acme");
    let dana = app.user("acme", "dana").await;
    let organization = app.organization_id("acme").await;
    let (number, monitor, alerting): (i32, String, String) = sqlx::query_as(
        "SELECT (SELECT max(number) FROM incidents WHERE organization_id = $1 AND status = 'open'),
                (SELECT name FROM monitors WHERE organization_id = $1 ORDER BY name LIMIT 1),
                (SELECT s.name FROM alerts a JOIN services s ON s.id = a.service_id
                  WHERE a.organization_id = $1 AND a.state = 'firing' AND a.acknowledged_at IS NULL
                  ORDER BY s.name LIMIT 1)",
    )
    .bind(organization)
    .fetch_one(app.pool())
    .await
    .unwrap();
    let incident = format!("INC-{number}");
    let calls = [
        ("list_tables", json!({})),
        ("describe_table", json!({"table": "deployments"})),
        ("run_select", json!({"sql": "SELECT name FROM services"})),
        (
            "explain_select",
            json!({"sql": "SELECT name FROM services"}),
        ),
        ("detect_anomalies", json!({"service": story.service})),
        ("slo_burn", json!({"service": story.service})),
        ("noisy_alert_rules", json!({})),
        ("correlate_incident", json!({"incident": incident})),
        (
            "list_incidents_opened_since",
            json!({"since": "2000-01-01T00:00:00Z"}),
        ),
        ("get_incident", json!({"incident": incident})),
        ("incident_alerts", json!({"incident": incident})),
        ("acknowledge_service_alerts", json!({"service": alerting})),
        (
            "annotate_incident",
            json!({"incident": incident, "note": "Looking"}),
        ),
        ("silence_monitor", json!({"monitor": monitor, "minutes": 5})),
        (
            "transition_incident",
            json!({"incident": incident, "action": "acknowledge"}),
        ),
        ("audit_log", json!({})),
    ];
    let client = app.client(Endpoint::All, "acme", "dana").await;
    let mut listed: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    listed.sort();
    let in_order: Vec<&str> = calls.iter().map(|(tool, _)| *tool).collect();
    let mut named: Vec<String> = in_order.iter().map(|tool| (*tool).to_owned()).collect();
    named.sort();
    assert_eq!(named, listed, "every tool has a call in this test");

    for (tool, arguments) in calls {
        let result = call(&client, tool, arguments).await;
        success(&result);
        let meta = serde_json::to_value(&result.meta).unwrap();
        assert!(
            meta.get("internal-mcp/audit").is_none(),
            "{tool}: the trail's facts reached the client: {meta}"
        );
    }
    app.state.audit().flush().await;
    let recorded: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT tool, rows_returned, sql_text FROM internal_mcp_audit_log
          WHERE user_id = $1 AND outcome = 'ok' ORDER BY id",
    )
    .bind(dana.id)
    .fetch_all(app.pool())
    .await
    .unwrap();
    let tools: Vec<&str> = recorded.iter().map(|(tool, _, _)| tool.as_str()).collect();
    assert_eq!(tools, in_order, "one ok record per call");
    for (tool, rows, sql) in &recorded {
        assert!(rows.is_some(), "{tool} reported no rows: {recorded:?}");
        let runs_sql = [
            "run_select",
            "explain_select",
            "detect_anomalies",
            "slo_burn",
            "noisy_alert_rules",
            "correlate_incident",
        ]
        .contains(&tool.as_str());
        assert_eq!(sql.is_some(), runs_sql, "{tool}: {sql:?}");
    }
}

#[tokio::test]
async fn calls_with_nul_characters_are_recorded_with_a_visible_stand_in() {
    let app = TestApp::spawn().await;
    let marcus = app.user("acme", "marcus").await;
    let client = app.client(Endpoint::Sql, "acme", "marcus").await;
    failure(&call(&client, "run_select", json!({"sql": "SELECT 'a\u{0}b'"})).await);
    let unknown = client
        .call_tool(rmcp::model::CallToolRequestParams::new("run\u{0}select"))
        .await;
    assert!(unknown.is_err(), "{unknown:?}");

    app.state.audit().flush().await;
    let recorded: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT tool, arguments FROM internal_mcp_audit_log WHERE user_id = $1 ORDER BY id",
    )
    .bind(marcus.id)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            (
                "run_select".to_owned(),
                json!({"sql": "SELECT 'a\u{2400}b'"})
            ),
            ("run\u{2400}select".to_owned(), json!({})),
        ]
    );
}
