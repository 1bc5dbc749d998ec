//! The audit trail: every call is recorded with who, what, the SQL, rows, duration and outcome,
//! secrets redacted, and admins read only their own organisation's trail.

use internal_mcp::config::Endpoint;
use serde_json::json;

use crate::support::{TestApp, call, failure, success};

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
    assert_eq!(
        records[2]["sql_text"],
        "SELECT name FROM services ORDER BY name LIMIT 3"
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
