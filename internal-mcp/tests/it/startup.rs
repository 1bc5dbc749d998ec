//! Fail-closed start-up: the server refuses to run when its reader connection could do more than
//! read its own organisation's rows.

use internal_mcp::AppState;
use internal_mcp::reader::Reader;

use crate::support::{reader_options, seeded_database, test_config, test_limits};

async fn refusal(config: internal_mcp::Config) -> String {
    match AppState::connect(config).await {
        Ok(_) => panic!("the server started with an unsafe reader"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_reader_that_is_the_schema_owner_or_a_superuser_is_refused() {
    let database = seeded_database().await;
    let mut config = test_config(&database);
    config.reader_database = database.connect_options.clone();
    let message = refusal(config).await;
    assert!(message.contains("not confined"), "{message}");
    assert!(
        message.contains("is a superuser") && message.contains("same role"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reader_that_can_change_its_organisation_setting_is_refused() {
    let database = seeded_database().await;
    sqlx::query("GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO PUBLIC")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message.contains("may execute 1 function(s)")
            && message.contains("pg_catalog.set_config(text, text, boolean)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_readable_table_without_row_level_security_is_refused() {
    let database = seeded_database().await;
    sqlx::query("CREATE TABLE leaky (secret text)")
        .execute(&database.pool)
        .await
        .unwrap();
    sqlx::query("GRANT SELECT ON leaky TO internal_mcp_reader")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message.contains("public.leaky which has no row-level security"),
        "{message}"
    );
}

#[tokio::test]
async fn a_readable_sequence_is_refused() {
    let database = seeded_database().await;
    sqlx::query("CREATE SEQUENCE public.tenant_counter")
        .execute(&database.pool)
        .await
        .unwrap();
    sqlx::query("GRANT SELECT ON SEQUENCE public.tenant_counter TO internal_mcp_reader")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message.contains("may read or advance the sequence(s) public.tenant_counter"),
        "{message}"
    );
}

#[tokio::test]
async fn the_reader_without_its_guard_functions_is_refused() {
    let database = seeded_database().await;
    sqlx::query(
        "REVOKE EXECUTE ON FUNCTION public.internal_mcp_guarded_query(uuid, text, double precision, integer, boolean) FROM internal_mcp_reader",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message
            .contains("cannot execute public.internal_mcp_guarded_query(uuid, text, double precision, integer, boolean)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refused_extension_in_the_database_is_refused() {
    let database = seeded_database().await;
    sqlx::query("CREATE EXTENSION pg_buffercache")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message.contains("has the extension(s) pg_buffercache"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reader_that_may_write_is_refused() {
    let database = seeded_database().await;
    sqlx::query("GRANT INSERT ON alerts TO internal_mcp_reader")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(message.contains("may write to public.alerts"), "{message}");
}

#[tokio::test]
async fn any_function_or_view_of_the_revoked_classes_left_callable_is_refused_and_named() {
    let database = seeded_database().await;
    for grant in [
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_live_tuples(oid) TO PUBLIC",
        "GRANT EXECUTE ON FUNCTION pg_catalog.ts_rewrite(tsquery, text) TO internal_mcp_reader",
        "GRANT EXECUTE ON FUNCTION pg_catalog.txid_current() TO PUBLIC",
        "GRANT SELECT ON pg_catalog.pg_stats TO PUBLIC",
    ] {
        sqlx::query(grant).execute(&database.pool).await.unwrap();
    }
    let message = refusal(test_config(&database)).await;
    for expected in [
        "may execute 3 function(s)",
        "pg_catalog.pg_stat_get_live_tuples(oid)",
        "pg_catalog.ts_rewrite(tsquery, text)",
        "pg_catalog.txid_current()",
        "may read 1 view(s)",
        "pg_catalog.pg_stats",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from: {message}"
        );
    }
}

#[tokio::test]
async fn security_definer_functions_and_other_databases_within_reach_are_refused() {
    let database = seeded_database().await;
    sqlx::query(
        "CREATE FUNCTION public.leak_everything() RETURNS bigint LANGUAGE sql SECURITY DEFINER
             AS 'SELECT count(*) FROM public.metric_samples'",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let mut config = test_config(&database);
    config.allow_reader_in_other_databases = false;
    let message = refusal(config).await;
    assert!(
        message.contains("SECURITY DEFINER function(s) leak_everything()"),
        "{message}"
    );
    // The server's own `postgres` database admits PUBLIC, the reader included.
    assert!(
        message.contains("may connect to other database(s)") && message.contains("postgres"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reader_connection_without_internal_mcps_settings_is_refused_and_cannot_run_the_guard() {
    let database = seeded_database().await;
    // A connection as the reader, without the start-up options internal-mcp sends (what a pooler
    // that drops them would hand out).
    let bare = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(reader_options(&database))
        .await
        .unwrap();
    let message = Reader::new(bare.clone(), test_limits())
        .check_session_settings()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(r#"statement_timeout is "#)
            && message.contains(r#"jit is "on", not "off""#)
            && message.contains(
                r#"default_transaction_isolation is "read committed", not "repeatable read""#
            ),
        "{message}"
    );
    // The guard function refuses a transaction that may write, whatever the connection.
    let mut writable = bare.begin_with("BEGIN READ WRITE").await.unwrap();
    let error = sqlx::query(
        "SELECT * FROM internal_mcp_guarded_query(gen_random_uuid(), 'SELECT NULL::float8, NULL::jsonb, NULL::bytea LIMIT 1', 1e6, 1000000, true)",
    )
    .fetch_all(&mut *writable)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("runs only in a read-only transaction"),
        "{error}"
    );
}

#[tokio::test]
async fn users_without_the_trigger_that_tells_of_role_changes_are_refused() {
    let database = seeded_database().await;
    sqlx::query("ALTER TABLE users DISABLE TRIGGER internal_mcp_user_changed")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(
        message.contains("lacks the enabled trigger(s) internal_mcp_user_changed that tell"),
        "{message}"
    );
}
