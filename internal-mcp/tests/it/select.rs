//! Real analytics SQL works, results are typed JSON in column order, and the caps hold with an
//! honest truncation flag.

use internal_mcp::config::{Endpoint, Limits};
use serde_json::json;

use crate::support::{TestApp, call, failure, seed_options, success, test_limits, time};

#[tokio::test]
async fn analytics_sql_with_ctes_windows_percentiles_and_json_works() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let since = (seed_options().until - chrono::Duration::hours(6)).to_rfc3339();
    let sql = format!(
        "WITH per_service AS (
             SELECT s.name AS service,
                    s.links -> 0 ->> 'title' AS first_link,
                    s.tags,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY sample.value) AS p95_error_rate,
                    count(*) AS samples,
                    max(sample.ts) AS latest
               FROM services s
               JOIN metric_series ms ON ms.service_id = s.id AND ms.name = 'error_rate'
               JOIN metric_samples sample ON sample.series_id = ms.id
              WHERE sample.ts >= '{since}'::timestamptz
              GROUP BY s.name, s.links, s.tags
         )
         SELECT service, first_link, p95_error_rate, samples,
                rank() OVER (ORDER BY p95_error_rate DESC) AS rank,
                avg(p95_error_rate) OVER () AS average,
                jsonb_build_object('p95', p95_error_rate, 'tags', tags) AS detail,
                latest
           FROM per_service
          ORDER BY rank
          LIMIT 5;"
    );
    let result = success(&call(&client, "run_select", json!({ "sql": sql })).await);
    assert_eq!(
        result["columns"],
        json!([
            "service",
            "first_link",
            "p95_error_rate",
            "samples",
            "rank",
            "average",
            "detail",
            "latest"
        ])
    );
    assert_eq!(result["row_count"], 5);
    assert_eq!(result["truncated"], false);
    let first = &result["rows"][0];
    assert!(first[0].is_string());
    assert_eq!(first[1], "Runbook");
    assert!(first[2].is_f64(), "{first}");
    assert_eq!(
        first[3], 361,
        "six hours of per-minute samples, both ends included"
    );
    assert_eq!(first[4], 1);
    assert!(
        first[6]["tags"].is_array() && first[6]["p95"].is_number(),
        "{first}"
    );
    assert_eq!(time(&first[7]), seed_options().until);
}

#[tokio::test]
async fn values_keep_their_types() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let sql = "SELECT 1::int AS small, 12345678901::bigint AS big, 2.5::float8 AS float, 1.25::numeric AS exact,
                      true AS flag, NULL::text AS nothing, 'text' AS words,
                      TIMESTAMPTZ '2025-06-12 17:30:00+02' AS at, '{\"a\": [1, 2]}'::jsonb AS document,
                      ARRAY[1, 2, 3] AS numbers, 'critical'::severity AS severity, interval '90 minutes' AS span";
    let result = success(&call(&client, "run_select", json!({ "sql": sql })).await);
    let row = &result["rows"][0];
    assert_eq!(row[0], 1);
    assert_eq!(row[1], 12_345_678_901_i64);
    assert_eq!(row[2], 2.5);
    assert_eq!(row[3], 1.25);
    assert_eq!(row[4], true);
    assert!(row[5].is_null());
    assert_eq!(row[6], "text");
    assert_eq!(
        row[7], "2025-06-12T15:30:00+00:00",
        "timestamps are RFC 3339 in UTC"
    );
    assert_eq!(time(&row[7]), seed_options().until);
    assert_eq!(row[8], json!({"a": [1, 2]}));
    assert_eq!(row[9], json!([1, 2, 3]));
    assert_eq!(row[10], "critical");
    assert!(row[11].is_string());
    // A trailing semicolon is fine; an empty result still says it is complete.
    let empty = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT * FROM services WHERE false;"}),
        )
        .await,
    );
    assert_eq!(empty["row_count"], 0);
    assert_eq!(empty["truncated"], false);
}

#[tokio::test]
async fn queries_run_read_only_repeatable_read_in_utc_without_jit() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let sql = "SELECT current_setting('transaction_read_only') AS read_only,
                      current_setting('transaction_isolation') AS isolation,
                      current_setting('TimeZone') AS time_zone,
                      current_setting('jit') AS jit,
                      current_setting('statement_timeout') AS statement_timeout";
    let result = success(&call(&client, "run_select", json!({ "sql": sql })).await);
    assert_eq!(
        result["rows"][0],
        json!(["on", "repeatable read", "UTC", "off", "3s"]),
        "{result}"
    );
}

#[tokio::test]
async fn row_and_byte_caps_truncate_with_a_flag() {
    let app = TestApp::spawn_with(|config| {
        config.limits = Limits {
            max_rows: 5,
            max_result_bytes: 2048,
            ..test_limits()
        }
    })
    .await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;

    let capped = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT n FROM generate_series(1, 100) AS n"}),
        )
        .await,
    );
    assert_eq!(capped["row_count"], 5);
    assert_eq!(capped["rows"], json!([[1], [2], [3], [4], [5]]));
    assert_eq!(capped["truncated"], true);
    assert!(
        capped["truncation"]
            .as_str()
            .unwrap()
            .contains("first 5 rows")
    );

    let exactly = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT n FROM generate_series(1, 5) AS n"}),
        )
        .await,
    );
    assert_eq!(exactly["truncated"], false);

    let asked_fewer = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT n FROM generate_series(1, 100) AS n", "max_rows": 2}),
        )
        .await,
    );
    assert_eq!(asked_fewer["row_count"], 2);
    assert_eq!(asked_fewer["truncated"], true);
    let asked_more = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT n FROM generate_series(1, 100) AS n", "max_rows": 1000}),
        )
        .await,
    );
    assert_eq!(asked_more["row_count"], 5, "the server's cap wins");

    let wide = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT repeat('x', 500) AS filler FROM generate_series(1, 5)"}),
        )
        .await,
    );
    assert_eq!(wide["truncated"], true);
    assert!(wide["row_count"].as_u64().unwrap() < 5);
    assert!(wide["truncation"].as_str().unwrap().contains("2048 bytes"));

    // One enormous value is cut off in the database, never shipped whole.
    let huge = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT repeat('x', 50000000) AS huge"}),
        )
        .await,
    );
    assert_eq!(huge["row_count"], 0);
    assert_eq!(huge["truncated"], true);
}

#[tokio::test]
async fn expensive_queries_are_refused_with_the_plans_top_line() {
    let app = TestApp::spawn_with(|config| config.limits.max_query_cost = 1000.0).await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    let refused = failure(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT count(*) FROM metric_samples"}),
        )
        .await,
    );
    assert!(refused.contains("above the limit of 1000"), "{refused}");
    assert!(
        refused.contains("Aggregate") || refused.contains("Scan"),
        "{refused}"
    );
    let cheap = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT name FROM services ORDER BY name LIMIT 3"}),
        )
        .await,
    );
    assert_eq!(cheap["row_count"], 3);
    let explained = success(
        &call(
            &client,
            "explain_select",
            json!({"sql": "SELECT count(*) FROM metric_samples"}),
        )
        .await,
    );
    assert_eq!(explained["within_limit"], false);
    assert_eq!(explained["cost_limit"], 1000.0);
    assert_eq!(explained["cost"], "over_the_limit");
}

#[tokio::test]
async fn explain_select_is_held_to_the_same_rules() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    for (sql, expected) in [
        (
            "SELECT 1; DROP TABLE alerts",
            "run_select takes exactly one query",
        ),
        (
            "WITH d AS (DELETE FROM alerts RETURNING *) SELECT * FROM d",
            "permission denied|data-modifying statement",
        ),
        (
            "DELETE FROM alerts",
            "permission denied|run_select takes exactly one query",
        ),
        (
            "SELECT 1) AS q UNION ALL SELECT repeat('x', 10) FROM (SELECT 1",
            "syntax error",
        ),
    ] {
        let message = failure(&call(&client, "explain_select", json!({ "sql": sql })).await);
        assert!(
            expected
                .split('|')
                .any(|alternative| message.contains(alternative)),
            "{sql}: {message}"
        );
    }
    let plan = success(
        &call(
            &client,
            "explain_select",
            json!({"sql": "SELECT count(*) FROM metric_samples a CROSS JOIN metric_samples b"}),
        )
        .await,
    );
    assert_eq!(plan["within_limit"], false);
    assert!(
        plan["plan"].as_str().unwrap().contains("Nested Loop"),
        "{plan}"
    );
}
