//! The attack corpus: hostile SQL sent to run_select, each refused with a clear tool error, and
//! afterwards every table, the reader role and the hardened privileges exactly as they were.

use internal_mcp::config::Endpoint;
use serde_json::json;

use crate::support::{
    Client, ServerProcess, call, database_fingerprint, failure, organization_id, success,
    test_limits,
};

/// Runs `sql` through run_select and asserts a tool error whose message contains `expected` (or
/// one of its `|`-separated alternatives).
async fn check(client: &Client, sql: &str, expected: &str) {
    let result = call(client, "run_select", json!({ "sql": sql })).await;
    let message = failure(&result);
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "{sql:?}\n  was refused with a message of {} bytes",
        message.len()
    );
    assert!(
        expected
            .split('|')
            .any(|alternative| message.contains(alternative)),
        "{sql:?}\n  was refused with {message:?}\n  which does not contain {expected:?}"
    );
}

/// Clear messages, by what PostgreSQL (or internal-mcp) refused.
const NOT_ONE_QUERY: &str = "run_select takes exactly one query";
const NOT_ALLOWED: &str = "permission denied";
const TOO_EXPENSIVE: &str = "estimated cost";
const TIMED_OUT: &str = "statement timeout";
const NOT_PARSED: &str = "syntax error|run_select takes exactly one query";
/// A write or a row lock: it cannot stand as the wrapper's subquery, PostgreSQL refuses a writing
/// CTE there, or the reader lacks the privilege.
const NOT_A_READ: &str =
    "permission denied|run_select takes exactly one query|data-modifying statement";
/// Refused in the database: a plan over the size limit, or one that took the whole statement timeout
/// to build.
const TOO_LARGE: &str = "over the limit of|statement timeout";
/// A 300 MB value that is no number: refused quoting at most 1,000 characters of it, or, on a
/// loaded machine, cancelled while PostgreSQL still builds it.
const NOT_A_NUMBER: &str = "invalid input syntax for type integer|statement timeout";

/// The longest tool error a hostile input may get back: PostgreSQL quotes values in its messages,
/// and they are cut before they leave the database.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Inputs written for the hardening (issue 10), by the class of weakness they probe.
fn hardening_corpus() -> Vec<(String, &'static str)> {
    let strings = |cases: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
        cases
            .iter()
            .map(|(sql, expected)| ((*sql).to_owned(), *expected))
            .collect()
    };
    strings(&[
        // 1. Escaping the wrapper: unbalanced text that would close `FROM (...) AS q` and append a
        //    branch the byte cap does not cover. It must parse on its own first, and does not.
        (
            "SELECT 1) AS q UNION ALL SELECT repeat('x', 300000000) FROM (SELECT 1",
            NOT_PARSED,
        ),
        (
            "SELECT 1 AS a) AS q UNION ALL (SELECT repeat('x', 100000000)",
            NOT_PARSED,
        ),
        (
            "SELECT 1) AS q, LATERAL (SELECT pg_sleep(10)) AS z --",
            NOT_PARSED,
        ),
        (
            "SELECT 1) q LIMIT 1) UNION ALL SELECT 'x' FROM (SELECT (1",
            NOT_PARSED,
        ),
        (
            "(SELECT 1)) AS q UNION ALL SELECT convert_to(repeat('x', 1000), 'UTF8') FROM ((SELECT 1",
            NOT_PARSED,
        ),
        (
            "VALUES (1)) AS q UNION ALL SELECT repeat('x', 100000000) FROM (VALUES (1)",
            NOT_PARSED,
        ),
        (
            "TABLE services) AS q UNION ALL SELECT repeat('x', 100000000) FROM (TABLE services",
            NOT_PARSED,
        ),
        ("SELECT 1 AS a) AS q ORDER BY 1) AS r --", NOT_PARSED),
        (
            "SELECT 1 FROM (SELECT 1) AS q) AS q2 WHERE (true",
            NOT_PARSED,
        ),
        (
            "SELECT ')' AS a) AS q UNION ALL SELECT repeat('x', 99) FROM (SELECT 1",
            NOT_PARSED,
        ),
        (
            "DECLARE c CURSOR FOR SELECT repeat('x', 100000000)",
            NOT_PARSED,
        ),
        ("EXPLAIN SELECT 1", NOT_PARSED),
        (
            "EXECUTE sqlx_s_1",
            "does not exist|run_select takes exactly one query",
        ),
        (
            "CREATE TABLE evil AS SELECT 1",
            "permission denied|read-only|run_select takes exactly one query",
        ),
        (
            "MERGE INTO alerts a USING services s ON false WHEN NOT MATCHED THEN DO NOTHING",
            NOT_A_READ,
        ),
        // 2. Plans whose top node looks cheap because a LIMIT scales it down, while the join
        //    below would run until the timeout: the node under the LIMIT is what is checked.
        (
            "SELECT a.value FROM metric_samples a, metric_samples b WHERE a.value > b.value + 1e12 LIMIT 1",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT 1 FROM metric_samples a JOIN metric_samples b ON a.ts > b.ts + interval '100 years' LIMIT 1",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT EXISTS (SELECT 1 FROM metric_samples a, metric_samples b WHERE a.value < -b.value - 1e12)",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT (SELECT count(*) FROM metric_samples a, metric_samples b) AS n",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT n FROM generate_series(1, 1000000000) AS n WHERE n < 0 LIMIT 1",
            TOO_EXPENSIVE,
        ),
        (
            "WITH x AS MATERIALIZED (SELECT a.ts FROM metric_samples a, metric_samples b) SELECT 1 FROM x LIMIT 1",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT * FROM metric_samples a, LATERAL (SELECT count(*) FROM metric_samples b WHERE b.value > a.value) c LIMIT 1",
            TOO_EXPENSIVE,
        ),
        // 4/5. Statistics and activity of other tenants, sizes, transaction ids and the like.
        (
            "SELECT relname, n_live_tup FROM pg_stat_user_tables",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_stat_get_live_tuples('metric_samples'::regclass)",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_stat_get_tuples_inserted('internal_mcp_audit_log'::regclass)",
            NOT_ALLOWED,
        ),
        ("SELECT * FROM pg_statio_user_tables", NOT_ALLOWED),
        (
            "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'services'",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_relation_size('internal_mcp_audit_log')",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_total_relation_size('internal_mcp_confirmations')",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_table_size('metric_samples'), pg_indexes_size('alerts')",
            NOT_ALLOWED,
        ),
        ("SELECT pg_database_size(current_database())", NOT_ALLOWED),
        ("SELECT pg_relation_filepath('alerts')", NOT_ALLOWED),
        (
            "SELECT backend_start, xact_start FROM pg_stat_activity",
            NOT_ALLOWED,
        ),
        (
            "SELECT pg_stat_get_backend_start(s) FROM pg_stat_get_backend_idset() AS s",
            NOT_ALLOWED,
        ),
        ("SELECT * FROM pg_locks", NOT_ALLOWED),
        ("SELECT * FROM pg_lock_status()", NOT_ALLOWED),
        ("SELECT pg_blocking_pids(pg_backend_pid())", NOT_ALLOWED),
        ("SELECT * FROM pg_prepared_xacts", NOT_ALLOWED),
        ("SELECT txid_current()", NOT_ALLOWED),
        ("SELECT pg_current_xact_id()", NOT_ALLOWED),
        ("SELECT txid_current_snapshot()", NOT_ALLOWED),
        ("SELECT pg_current_snapshot()", NOT_ALLOWED),
        ("SELECT pg_current_wal_lsn()", NOT_ALLOWED),
        (
            "SELECT pg_stat_get_db_xact_commit(oid) FROM pg_database",
            NOT_ALLOWED,
        ),
        ("SELECT pg_notify('alerts', 'x')", NOT_ALLOWED),
        ("SELECT pg_notification_queue_usage()", NOT_ALLOWED),
        ("SELECT pg_export_snapshot()", NOT_ALLOWED),
        (
            "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')",
            NOT_ALLOWED,
        ),
        ("SELECT * FROM pg_control_checkpoint()", NOT_ALLOWED),
        ("SELECT pg_stat_get_snapshot_timestamp()", NOT_ALLOWED),
        // 1. What the database produces must stay there unless bounded: a constant folded to
        //    300 MB and quoted in the plan, or in an error message, at plan time and at run time.
        (
            "SELECT 1 FROM services WHERE name = repeat('x', 300000000)",
            TOO_LARGE,
        ),
        (
            "SELECT id FROM alerts ORDER BY labels ->> repeat('k', 200000000)",
            TOO_LARGE,
        ),
        ("SELECT repeat('x', 300000000)::int", NOT_A_NUMBER),
        (
            "SELECT repeat(name, 10000000)::int FROM services",
            NOT_A_NUMBER,
        ),
        (
            "SELECT to_date(repeat('9', 100000000), 'YYYY') FROM services",
            "out of range",
        ),
        // 2. Lazily-yielding joins: no blocking node, each row cheap, the whole join huge.
        (
            "SELECT * FROM metric_samples a, metric_samples b",
            TOO_EXPENSIVE,
        ),
        (
            "SELECT a.value FROM metric_samples a JOIN metric_samples b ON a.value < b.value LIMIT 5",
            TOO_EXPENSIVE,
        ),
        // The guard function itself, called from the model's query to run SQL held in a string
        // for an organisation and with a cost limit of its choosing: it runs only at the top of a
        // statement.
        (
            "SELECT * FROM internal_mcp_guarded_query('00000000-0000-4000-8000-000000000001', 'SELECT NULL::float8, NULL::jsonb, NULL::bytea FROM metric_samples a, metric_samples b', 1e15, 1000000000, true)",
            NOT_ALLOWED,
        ),
        (
            "SELECT plan FROM public.internal_mcp_guarded_query((SELECT id FROM organizations LIMIT 1), 'SELECT * FROM incidents LIMIT 1', 1e15, 1000000000, false)",
            NOT_ALLOWED,
        ),
        // 4 and 5. The cluster's transaction counter through xmin, and the shared server.
        ("SELECT age(xmin) FROM services", NOT_ALLOWED),
        ("SELECT mxid_age(xmax) FROM services", NOT_ALLOWED),
        ("SELECT pg_postmaster_start_time()", NOT_ALLOWED),
        ("SELECT pg_conf_load_time()", NOT_ALLOWED),
        ("SELECT inet_server_addr(), inet_server_port()", NOT_ALLOWED),
    ])
}

#[tokio::test]
async fn hostile_queries_are_refused_and_change_nothing() {
    // The real binary, so what is measured is internal-mcp's own memory.
    let server = ServerProcess::spawn().await;
    let before = database_fingerprint(server.pool()).await;
    let globex = organization_id(server.pool(), "globex").await;
    let client = server.client(Endpoint::All, "acme", "dana").await;

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
        ("DELETE FROM alerts".into(), NOT_A_READ),
        ("UPDATE incidents SET status = 'resolved'".into(), NOT_A_READ),
        ("INSERT INTO users SELECT * FROM users".into(), NOT_A_READ),
        ("WITH d AS (DELETE FROM alerts RETURNING *) SELECT * FROM d".into(), NOT_A_READ),
        ("WITH u AS (UPDATE monitors SET silenced_until = now() RETURNING id) SELECT count(*) FROM u".into(), NOT_A_READ),
        (
            "WITH i AS (INSERT INTO organizations (id, slug, name) VALUES (gen_random_uuid(), 'evil', 'Evil') RETURNING id) SELECT * FROM i"
                .into(),
            NOT_A_READ,
        ),
        ("SELECT * FROM alerts FOR UPDATE".into(), NOT_A_READ),
        ("SELECT * FROM monitors FOR SHARE".into(), NOT_A_READ),
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
        // A call is parsed alone: the procedure is looked up, and is nowhere.
        ("CALL refresh_everything()".into(), "run_select takes exactly one query|does not exist"),
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
    let hardening = hardening_corpus();
    assert!(
        hardening.len() >= 40,
        "the hardening corpus has {} cases",
        hardening.len()
    );
    for (sql, expected) in corpus.iter().chain(&hardening) {
        check(&client, sql, expected).await;
    }
    // Answered, but bounded: text that looks like an escape inside a string is only a string, and
    // huge values are cut in the database, by bytes, before they are shipped.
    for sql in [
        "SELECT $q$ ) AS q UNION ALL SELECT repeat('x', 100000000) FROM (SELECT 1 $q$ AS text",
        "SELECT '\n) AS q UNION ALL SELECT repeat(''x'', 100000000) FROM (SELECT 1' AS text",
        "SELECT 1 AS text -- ) AS q UNION ALL SELECT repeat('x', 100000000) FROM (SELECT 1",
        "SELECT 1 AS text /* ) AS q UNION ALL SELECT repeat('x', 100000000) FROM (SELECT 1 */",
    ] {
        let answered = success(&call(&client, "run_select", json!({ "sql": sql })).await);
        assert_eq!(answered["row_count"], 1, "{sql}: {answered}");
        assert!(answered.to_string().len() < 1000, "{sql}: {answered}");
    }
    for sql in [
        // 50 MB in one value (the escape shipped 300 MB): cut in the database.
        "SELECT string_agg(repeat('x', 1000), '') AS huge FROM generate_series(1, 50000)",
        // Three-byte characters: a cap by characters would let three times the bytes through.
        "SELECT repeat('\u{20AC}', 200000) AS wide",
        "SELECT repeat('\u{20AC}', 1000) AS wide FROM generate_series(1, 5000)",
        "SELECT repeat('x', 30000000) AS huge UNION ALL SELECT repeat('y', 30000000)",
    ] {
        let answered = success(&call(&client, "run_select", json!({ "sql": sql })).await);
        assert_eq!(answered["truncated"], true, "{sql}");
        assert!(
            answered.to_string().len() <= test_limits().max_result_bytes + 4096,
            "{sql}: {} bytes came back",
            answered.to_string().len()
        );
    }
    let peak = server.peak_resident_bytes();
    eprintln!(
        "attack corpus: {} inputs refused, 8 answered within bounds; internal-mcp's peak resident memory (a process of its own): {:.1} MB",
        corpus.len() + hardening.len(),
        peak as f64 / 1_048_576.0
    );
    // Unbounded, the two 30 MB values alone would be read, decoded and copied: well over 100 MB.
    assert!(
        peak < 100 * 1024 * 1024,
        "internal-mcp's resident memory peaked at {peak} bytes during the corpus"
    );

    assert_eq!(
        before,
        database_fingerprint(server.pool()).await,
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
