//! The harness against a real PostgreSQL container: templates are prepared once, every test
//! database is a separate copy, and child processes can reach it by URL.

use std::convert::Infallible;

async fn create_marker_table(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE marker (id int PRIMARY KEY)")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO marker VALUES (1), (2)")
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_database_is_a_copy_of_its_prepared_template() {
    let database = test_harness::database("marker", create_marker_table).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM marker")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    println!(
        "connected to PostgreSQL {version} in database {}",
        database.name
    );
}

#[tokio::test]
async fn writes_in_one_test_database_are_invisible_in_another() {
    let first = test_harness::database("marker", create_marker_table).await;
    let second = test_harness::database("marker", create_marker_table).await;
    assert_ne!(first.name, second.name);
    sqlx::query("DELETE FROM marker")
        .execute(&first.pool)
        .await
        .unwrap();
    let remaining: i64 = sqlx::query_scalar("SELECT count(*) FROM marker")
        .fetch_one(&second.pool)
        .await
        .unwrap();
    assert_eq!(remaining, 2);
}

#[tokio::test]
async fn the_url_reaches_the_same_database() {
    let database = test_harness::database("empty", async |_| Ok::<_, Infallible>(())).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, database.name);
}

#[tokio::test]
async fn a_failing_template_reports_its_name_and_cause() {
    let error = test_harness::try_database("broken", async |pool| {
        sqlx::query("SELECT * FROM no_such_table")
            .execute(pool)
            .await
            .map(drop)
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`broken`"), "{message}");
    assert!(message.contains("no_such_table"), "{message}");
}
