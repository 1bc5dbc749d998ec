//! The host's own schema and role: migrations run as the role, inside its schema, and the role can
//! touch none of the product's tables; a role that could is refused at start-up.

use internal_host::database::bootstrap_sql;
use internal_host::{AppState, Error};

use crate::support::{HOST_PASSWORD, host_config, seeded_database};

#[tokio::test]
async fn the_host_migrates_its_own_schema_and_cannot_read_product_tables() {
    let database = seeded_database().await;
    let state = AppState::connect(host_config(&database, "http://127.0.0.1:1/mcp"))
        .await
        .expect("the host starts");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'internal_host' ORDER BY table_name::text COLLATE \"C\"",
    )
    .fetch_all(state.database())
    .await
    .expect("the host's tables");
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "approvals",
            "conversations",
            "discovery_cursors",
            "events",
            "investigation_budgets",
            "investigation_steps",
            "investigations",
            "mcp_tool_fingerprints",
            "pending_sign_ins",
            "sessions",
            "tool_results",
            "turns"
        ]
    );
    for product_table in ["public.incidents", "public.users", "public.metric_samples"] {
        let error = sqlx::query(&format!("SELECT 1 FROM {product_table} LIMIT 1"))
            .execute(state.database())
            .await
            .expect_err("the host's role must not read product tables");
        assert!(
            error.to_string().contains("permission denied"),
            "{product_table}: {error}"
        );
    }
}

#[tokio::test]
async fn a_role_with_any_privilege_on_a_product_table_is_refused() {
    let database = seeded_database().await;
    sqlx::query("GRANT SELECT ON public.incidents TO internal_host")
        .execute(&database.pool)
        .await
        .expect("the grant");
    let refused = AppState::connect(host_config(&database, "http://127.0.0.1:1/mcp")).await;
    match refused {
        Err(Error::Startup(message)) => {
            assert!(message.contains("public.incidents"), "{message}")
        }
        Err(other) => panic!("expected a start-up refusal, got {other}"),
        Ok(_) => panic!("the host started with a privilege on a product table"),
    }
    sqlx::query("REVOKE SELECT ON public.incidents FROM internal_host")
        .execute(&database.pool)
        .await
        .expect("the revoke");
}

#[tokio::test]
async fn bootstraps_run_at_once_all_succeed() {
    // The role is the cluster's: without the bootstrap's lock, concurrent ALTER ROLE statements
    // fail with "tuple concurrently updated" (two e2e tests once started their hosts together).
    let database = seeded_database().await;
    let sql = bootstrap_sql(HOST_PASSWORD).expect("a valid password");
    let mut bootstraps = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (pool, sql) = (database.pool.clone(), sql.clone());
        bootstraps.spawn(async move { sqlx::raw_sql(&sql).execute(&pool).await.map(|_| ()) });
    }
    while let Some(outcome) = bootstraps.join_next().await {
        outcome
            .expect("the bootstrap task")
            .expect("a bootstrap beside others succeeds");
    }
    AppState::connect(host_config(&database, "http://127.0.0.1:1/mcp"))
        .await
        .expect("the host starts after them");
}
