//! The attack corpus: hostile SQL sent to run_select, each refused with a clear tool error, and
//! afterwards every table, the reader role and the hardened privileges exactly as they were.

use internal_mcp::config::Endpoint;
use serde_json::json;

use crate::support::{Client, TestApp, call, database_fingerprint, failure, success};

/// Runs `sql` through run_select and asserts a tool error whose message contains `expected`.
async fn check(client: &Client, sql: &str, expected: &str) {
    let result = call(client, "run_select", json!({ "sql": sql })).await;
    let message = failure(&result);
    assert!(
        message.contains(expected),
        "{sql:?}\n  was refused with {message:?}\n  which does not contain {expected:?}"
    );
}

/// Clear messages, by what PostgreSQL (or internal-mcp) refused.
const NOT_ONE_QUERY: &str = "run_select takes exactly one query";
const NOT_ALLOWED: &str = "permission denied";
const DATA_MODIFYING: &str = "data-modifying";
const TOO_EXPENSIVE: &str = "estimated cost";
const TIMED_OUT: &str = "statement timeout";

#[tokio::test]
async fn hostile_queries_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let before = database_fingerprint(app.pool()).await;
    let globex = app.organization_id("globex").await;
    let client = app.client(Endpoint::All, "acme", "dana").await;

    let corpus: Vec<(String, &str)> = vec![
        // Stacked statements: the extended protocol takes one statement, the subquery one query.
        ("SELECT 1; DROP TABLE alerts".into(), NOT_ONE_QUERY),
        ("COMMIT; DROP TABLE alerts".into(), NOT_ONE_QUERY),
        ("SELECT 1; COMMIT; DROP TABLE alerts; --".into(), NOT_ONE_QUERY),
        ("BEGIN; DELETE FROM alerts; COMMIT".into(), NOT_ONE_QUERY),
        ("ROLLBACK; SET ROLE postgres; DELETE FROM alerts".into(), NOT_ONE_QUERY),
        // Breaking out of the wrapper with comments and parentheses.
        ("SELECT 1) AS q; DROP TABLE alerts; --".into(), NOT_ONE_QUERY),
        ("SELECT 1 --\n) AS q; DELETE FROM alerts; SELECT (1".into(), NOT_ONE_QUERY),
        ("SELECT 1 /* swallow the rest".into(), NOT_ONE_QUERY),
        ("SELECT $$ swallow the rest".into(), NOT_ONE_QUERY),
        // Writes, directly and in writable CTEs.
        ("DELETE FROM alerts".into(), NOT_ONE_QUERY),
        ("UPDATE incidents SET status = 'resolved'".into(), NOT_ONE_QUERY),
        ("INSERT INTO users SELECT * FROM users".into(), NOT_ONE_QUERY),
        ("WITH d AS (DELETE FROM alerts RETURNING *) SELECT * FROM d".into(), DATA_MODIFYING),
        ("WITH u AS (UPDATE monitors SET silenced_until = now() RETURNING id) SELECT count(*) FROM u".into(), DATA_MODIFYING),
        (
            "WITH i AS (INSERT INTO organizations (id, slug, name) VALUES (gen_random_uuid(), 'evil', 'Evil') RETURNING id) SELECT * FROM i"
                .into(),
            DATA_MODIFYING,
        ),
        ("SELECT * FROM alerts FOR UPDATE".into(), NOT_ALLOWED),
        ("SELECT * FROM monitors FOR SHARE".into(), NOT_ALLOWED),
        // DDL, utility statements and transaction control.
        ("DROP TABLE alerts".into(), NOT_ONE_QUERY),
        ("TRUNCATE alerts".into(), NOT_ONE_QUERY),
        ("CREATE TABLE evil (id int)".into(), NOT_ONE_QUERY),
        ("GRANT ALL ON alerts TO PUBLIC".into(), NOT_ONE_QUERY),
        ("ALTER ROLE internal_mcp_reader SUPERUSER".into(), NOT_ONE_QUERY),
        ("VACUUM alerts".into(), NOT_ONE_QUERY),
        ("PREPARE p AS DELETE FROM alerts".into(), NOT_ONE_QUERY),
        ("LISTEN alerts_channel".into(), NOT_ONE_QUERY),
        // Settings: the organisation row-level security rests on must not move.
        ("SET ROLE postgres".into(), NOT_ONE_QUERY),
        (format!("SET app.organization_id = '{globex}'"), NOT_ONE_QUERY),
        ("RESET app.organization_id".into(), NOT_ONE_QUERY),
        ("RESET ALL".into(), NOT_ONE_QUERY),
        (format!("SELECT set_config('app.organization_id', '{globex}', true)"), NOT_ALLOWED),
        (format!("SELECT * FROM services WHERE set_config('app.organization_id', '{globex}', true) IS NOT NULL"), NOT_ALLOWED),
        ("SELECT pg_catalog.set_config('role', 'postgres', false)".into(), NOT_ALLOWED),
        (format!("SELECT \"set_config\"('app.organization_id', '{globex}', false)"), NOT_ALLOWED),
        // Unicode escapes spelling set_config: U&"\0073et_config".
        (format!("SELECT U&\"\\0073et_config\"('app.organization_id', '{globex}', false)"), NOT_ALLOWED),
        // Files, programs and other administrative functions.
        ("SELECT pg_read_file('/etc/passwd')".into(), NOT_ALLOWED),
        ("SELECT * FROM pg_read_file('/etc/passwd')".into(), NOT_ALLOWED),
        ("SELECT pg_read_binary_file('postgresql.conf')".into(), NOT_ALLOWED),
        ("SELECT * FROM pg_ls_dir('.')".into(), NOT_ALLOWED),
        ("SELECT pg_stat_file('postgresql.conf')".into(), NOT_ALLOWED),
        ("SELECT lo_import('/etc/passwd')".into(), NOT_ALLOWED),
        ("SELECT lo_get(1)".into(), NOT_ALLOWED),
        ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/internal-mcp-pwned'".into(), NOT_ONE_QUERY),
        ("COPY alerts TO '/tmp/alerts.csv'".into(), NOT_ONE_QUERY),
        ("DO $$ BEGIN DELETE FROM alerts; END $$".into(), NOT_ONE_QUERY),
        ("CALL refresh_everything()".into(), NOT_ONE_QUERY),
        ("SELECT nextval('metric_series_id_seq')".into(), NOT_ALLOWED),
        ("SELECT pg_terminate_backend(pg_backend_pid())".into(), NOT_ALLOWED),
        ("SELECT pg_cancel_backend(1)".into(), NOT_ALLOWED),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity".into(), NOT_ALLOWED),
        ("SELECT pg_reload_conf()".into(), NOT_ALLOWED),
        ("SELECT pg_advisory_lock(42)".into(), NOT_ALLOWED),
        ("SELECT count(pg_advisory_xact_lock(n)) FROM generate_series(1, 1000000) AS n".into(), NOT_ALLOWED),
        ("SELECT query_to_xml('DELETE FROM alerts', true, false, '')".into(), NOT_ALLOWED),
        ("SELECT database_to_xml(true, false, '')".into(), NOT_ALLOWED),
        // Other sessions' SQL, credentials and internal tables.
        ("SELECT query FROM pg_stat_activity".into(), NOT_ALLOWED),
        ("SELECT * FROM pg_stat_get_activity(NULL)".into(), NOT_ALLOWED),
        ("SELECT statement FROM pg_prepared_statements".into(), NOT_ALLOWED),
        ("SELECT * FROM api_tokens".into(), NOT_ALLOWED),
        ("SELECT token_hash FROM api_tokens WHERE user_id IN (SELECT id FROM users)".into(), NOT_ALLOWED),
        ("SELECT * FROM idempotency_keys".into(), NOT_ALLOWED),
        ("SELECT * FROM internal_mcp_audit_log".into(), NOT_ALLOWED),
        ("SELECT * FROM internal_mcp_confirmations".into(), NOT_ALLOWED),
        ("SELECT * FROM _sqlx_migrations".into(), NOT_ALLOWED),
        ("SELECT rolpassword FROM pg_authid".into(), NOT_ALLOWED),
        // Resource exhaustion: refused by the cost check, or cancelled by the statement timeout.
        ("SELECT count(*) FROM metric_samples a CROSS JOIN metric_samples b".into(), TOO_EXPENSIVE),
        ("SELECT * FROM metric_samples a, metric_samples b ORDER BY random()".into(), TOO_EXPENSIVE),
        ("SELECT count(*) FROM generate_series(1, 100000000000) AS n".into(), TOO_EXPENSIVE),
        ("SELECT pg_sleep(30)".into(), TIMED_OUT),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r".into(), TIMED_OUT),
        // EXPLAIN ANALYZE would run a write; EXPLAIN is no query.
        ("EXPLAIN ANALYZE DELETE FROM alerts".into(), NOT_ONE_QUERY),
        ("EXPLAIN ANALYZE SELECT 1".into(), NOT_ONE_QUERY),
        // Unicode look-alikes and invisible characters.
        ("ＳＥＬＥＣＴ 1; DROP TABLE alerts".into(), NOT_ONE_QUERY),
        ("SELECT 1;\u{200B}DROP TABLE alerts".into(), NOT_ONE_QUERY),
        ("SELECT 1\u{037E} DROP TABLE alerts".into(), NOT_ONE_QUERY),
        // Nothing to run.
        ("".into(), "sql is empty"),
        (" ;; ".into(), "sql is empty"),
        ("SELECT '\u{0}'".into(), "NUL"),
    ];
    assert!(corpus.len() >= 40, "the corpus has {} cases", corpus.len());
    for (sql, expected) in &corpus {
        check(&client, sql, expected).await;
    }

    assert_eq!(
        before,
        database_fingerprint(app.pool()).await,
        "the corpus changed the database"
    );
    // The organisation never moved: a plain query still sees only acme.
    let organizations = success(
        &call(
            &client,
            "run_select",
            json!({"sql": "SELECT slug FROM organizations"}),
        )
        .await,
    );
    assert_eq!(organizations["rows"], json!([["acme"]]));
    // No file appeared either.
    assert!(!std::path::Path::new("/tmp/internal-mcp-pwned").exists());
}

#[tokio::test]
async fn explain_select_is_held_to_the_same_rules() {
    let app = TestApp::spawn().await;
    let client = app.client(Endpoint::Sql, "acme", "sam").await;
    for (sql, expected) in [
        ("SELECT 1; DROP TABLE alerts", NOT_ONE_QUERY),
        (
            "WITH d AS (DELETE FROM alerts RETURNING *) SELECT * FROM d",
            DATA_MODIFYING,
        ),
        ("DELETE FROM alerts", NOT_ONE_QUERY),
    ] {
        let message = failure(&call(&client, "explain_select", json!({ "sql": sql })).await);
        assert!(message.contains(expected), "{sql}: {message}");
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
