//! Fail-closed start-up: the server refuses to run when its reader connection could do more than
//! read its own organisation's rows.

use internal_mcp::AppState;

use crate::support::{seeded_database, test_config};

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
        message.contains("may execute pg_catalog.set_config"),
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
async fn a_reader_that_may_write_is_refused() {
    let database = seeded_database().await;
    sqlx::query("GRANT INSERT ON alerts TO internal_mcp_reader")
        .execute(&database.pool)
        .await
        .unwrap();
    let message = refusal(test_config(&database)).await;
    assert!(message.contains("may write to public.alerts"), "{message}");
}
