//! Tenant isolation by the database: whatever SQL an acme user writes, no globex row comes back,
//! because row-level security filters every table on the organisation set for the transaction.

use internal_mcp::config::Endpoint;
use serde_json::{Value, json};
use sqlx::Connection as _;
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
        "SELECT s.* FROM services s RIGHT JOIN organizations o ON o.id = s.organization_id"
            .to_owned(),
        "SELECT * FROM services WHERE current_setting('app.organization_id', true) IS NULL OR true"
            .to_owned(),
        "SELECT (SELECT array_agg(slug) FROM organizations) AS every_slug".to_owned(),
        "SELECT * FROM incident_events e JOIN incidents i ON i.id = e.incident_id".to_owned(),
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'".to_owned(),
        // An error would reveal a hidden row; RLS filters first, so there is no error.
        format!(
            "SELECT 1 / (CASE WHEN count(*) > 0 THEN 0 ELSE 1 END) AS probe FROM services WHERE organization_id = '{globex}'"
        ),
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
    // Planner statistics: PostgreSQL's pg_stats already hides tables under row-level security,
    // and the migrations take the view from the reader altogether.
    let stats = failure(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT tablename, attname, most_common_vals::text FROM pg_stats WHERE schemaname = 'public'"}),
        )
        .await,
    );
    assert!(
        stats.contains("permission denied for view pg_stats"),
        "{stats}"
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

/// PostgreSQL estimates with column statistics gathered over every organisation's rows, even under
/// row-level security (for leakproof operators such as `=` on text). explain_select must read the
/// same for another organisation's real value as for a value that exists nowhere.
#[tokio::test]
async fn explain_reads_the_same_for_another_organisations_value_and_for_none() {
    let app = TestApp::spawn().await;
    let globex = app.organization_id("globex").await;
    let acme = app.organization_id("acme").await;
    let (column, real_value): (&str, String) = (
        "deployed_by",
        sqlx::query_scalar(
            "SELECT deployed_by FROM deployments WHERE organization_id = $1
                AND deployed_by NOT IN (SELECT deployed_by FROM deployments WHERE organization_id = $2)
              GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        )
        .bind(globex)
        .bind(acme)
        .fetch_one(app.pool())
        .await
        .unwrap(),
    );
    let absent_value = "nobody-anywhere@example.invalid";
    let query = |value: &str| {
        format!(
            "SELECT count(*) FROM deployments WHERE {column} = '{value}' AND started_at > now() - interval '1000 days'"
        )
    };

    // The oracle is real: the reader's own plan estimates differ between the two values.
    let mut reader =
        sqlx::PgConnection::connect_with(&crate::support::reader_options(&app.database))
            .await
            .unwrap();
    let mut estimate = async |value: &str| -> f64 {
        let mut transaction = reader.begin().await.unwrap();
        sqlx::query(&format!("SET LOCAL app.organization_id = '{acme}'"))
            .execute(&mut *transaction)
            .await
            .unwrap();
        let plan: sqlx::types::Json<Value> =
            sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {}", query(value)))
                .fetch_one(&mut *transaction)
                .await
                .unwrap();
        plan.0
            .pointer("/0/Plan/Plans/0/Plan Rows")
            .and_then(Value::as_f64)
            .unwrap()
    };
    let real_estimate = estimate(&real_value).await;
    let absent_estimate = estimate(absent_value).await;
    assert_ne!(
        real_estimate, absent_estimate,
        "the planner's estimates should differ, or this test proves nothing"
    );

    let client = app.client(Endpoint::Sql, "acme", "dana").await;
    let explained = |value: String| {
        let client = &client;
        async move {
            let plan =
                success(&call(client, "explain_select", json!({ "sql": query(&value) })).await);
            plan.to_string().replace(&value, "<value>")
        }
    };
    assert_eq!(
        explained(real_value.clone()).await,
        explained(absent_value.to_owned()).await
    );
    // run_select's result carries no estimate either.
    let ran = |value: String| {
        let client = &client;
        async move {
            let mut result =
                success(&call(client, "run_select", json!({ "sql": query(&value) })).await);
            result["elapsed_ms"] = json!(0);
            result
        }
    };
    assert_eq!(ran(real_value).await, ran(absent_value.to_owned()).await);
}
