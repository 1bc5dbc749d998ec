//! Tenant isolation by the database: whatever SQL an acme user writes, no globex row comes back,
//! because row-level security filters every table on the organisation set for the transaction.

use internal_mcp::config::Endpoint;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Client, TestApp, call, failure, success};

/// Everything that identifies globex's rows.
struct Secrets {
    organization_id: Uuid,
    service_ids: Vec<Uuid>,
    incident_id: Uuid,
    series_id: i64,
}

impl Secrets {
    async fn load(app: &TestApp) -> Self {
        let organization_id = app.organization_id("globex").await;
        let service_ids = sqlx::query_scalar("SELECT id FROM services WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_all(app.pool())
            .await
            .unwrap();
        let incident_id =
            sqlx::query_scalar("SELECT id FROM incidents WHERE organization_id = $1 LIMIT 1")
                .bind(organization_id)
                .fetch_one(app.pool())
                .await
                .unwrap();
        let series_id =
            sqlx::query_scalar("SELECT id FROM metric_series WHERE organization_id = $1 LIMIT 1")
                .bind(organization_id)
                .fetch_one(app.pool())
                .await
                .unwrap();
        Self {
            organization_id,
            service_ids,
            incident_id,
            series_id,
        }
    }

    fn assert_absent(&self, sql: &str, result: &Value) {
        let text = result.to_string();
        assert!(!text.contains("globex"), "{sql} leaked globex: {text}");
        assert!(
            !text.contains(&self.organization_id.to_string()),
            "{sql} leaked globex's id"
        );
        assert!(
            !text.contains(&self.incident_id.to_string()),
            "{sql} leaked a globex incident"
        );
        for id in &self.service_ids {
            assert!(
                !text.contains(&id.to_string()),
                "{sql} leaked globex service {id}"
            );
        }
    }
}

async fn rows(client: &Client, sql: &str) -> Value {
    success(&call(client, "run_select", json!({ "sql": sql })).await)
}

#[tokio::test]
async fn no_trick_reads_another_organisations_rows() {
    let app = TestApp::spawn().await;
    let secrets = Secrets::load(&app).await;
    let acme = app.organization_id("acme").await;
    let client = app.client(Endpoint::All, "acme", "dana").await;
    let globex = secrets.organization_id;
    let incident = secrets.incident_id;
    let series = secrets.series_id;

    // Each query runs, and nothing in its result belongs to globex.
    let tricks = [
        "SELECT * FROM organizations".to_owned(),
        "SELECT * FROM services".to_owned(),
        "SELECT * FROM users".to_owned(),
        format!("SELECT * FROM services WHERE organization_id = '{globex}'"),
        format!("SELECT * FROM services WHERE organization_id <> '{acme}'"),
        format!("SELECT * FROM incidents WHERE id = '{incident}'"),
        format!("SELECT * FROM metric_samples WHERE series_id = {series} LIMIT 5"),
        "SELECT * FROM services UNION ALL SELECT * FROM services".to_owned(),
        "SELECT s.* FROM services s RIGHT JOIN organizations o ON o.id = s.organization_id".to_owned(),
        "SELECT * FROM services WHERE current_setting('app.organization_id', true) IS NULL OR true".to_owned(),
        "SELECT (SELECT array_agg(slug) FROM organizations) AS every_slug".to_owned(),
        "SELECT * FROM incident_events e JOIN incidents i ON i.id = e.incident_id".to_owned(),
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'".to_owned(),
        // Planner statistics: pg_stats hides tables whose row-level security is active.
        "SELECT tablename, attname, most_common_vals::text FROM pg_stats WHERE schemaname = 'public'".to_owned(),
        // An error would reveal a hidden row; RLS filters first, so there is no error.
        format!("SELECT 1 / (CASE WHEN count(*) > 0 THEN 0 ELSE 1 END) AS probe FROM services WHERE organization_id = '{globex}'"),
        format!("SELECT CAST(name AS integer) FROM services WHERE organization_id = '{globex}'"),
        "SELECT name FROM services TABLESAMPLE SYSTEM (100)".to_owned(),
        "SELECT * FROM ONLY services".to_owned(),
    ];
    for sql in &tricks {
        let result = rows(&client, sql).await;
        secrets.assert_absent(sql, &result);
    }
    assert_eq!(
        rows(&client, "SELECT count(*) AS n FROM organizations").await["rows"],
        json!([[1]])
    );
    let probe = rows(
        &client,
        &format!("SELECT 1 / (CASE WHEN count(*) > 0 THEN 0 ELSE 1 END) AS probe FROM services WHERE organization_id = '{globex}'"),
    )
    .await;
    assert_eq!(probe["rows"], json!([[1]]), "the probe saw a globex row");
    let stats = rows(
        &client,
        "SELECT count(*) AS n FROM pg_stats WHERE schemaname = 'public' AND tablename = 'services'",
    )
    .await;
    assert_eq!(
        stats["rows"],
        json!([[0]]),
        "statistics of row-level-secured tables must stay hidden"
    );
}

#[tokio::test]
async fn tools_only_find_the_callers_organisations_resources() {
    let app = TestApp::spawn().await;
    let secrets = Secrets::load(&app).await;
    let client = app.client(Endpoint::All, "acme", "dana").await;

    let anomalies = call(
        &client,
        "detect_anomalies",
        json!({"service": "shipment-tracker"}),
    )
    .await;
    assert!(failure(&anomalies).contains("no service named"));
    let correlation = call(
        &client,
        "correlate_incident",
        json!({"incident": secrets.incident_id}),
    )
    .await;
    assert!(failure(&correlation).contains("no incident"));
    let acknowledge = call(
        &client,
        "acknowledge_service_alerts",
        json!({"service": "shipment-tracker"}),
    )
    .await;
    assert!(failure(&acknowledge).contains("no service named"));
    let annotate = call(
        &client,
        "annotate_incident",
        json!({"incident": secrets.incident_id, "note": "hello"}),
    )
    .await;
    assert!(failure(&annotate).contains("no incident"));

    // Both organisations have a notification-service: acme's tools only ever see acme's.
    let burn = success(
        &call(
            &client,
            "slo_burn",
            json!({"service": "notification-service"}),
        )
        .await,
    );
    secrets.assert_absent("slo_burn", &burn);
    let tables = success(&call(&client, "list_tables", json!({})).await);
    secrets.assert_absent("list_tables", &tables);
}
