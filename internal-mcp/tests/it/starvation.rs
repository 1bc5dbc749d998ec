//! One caller cannot starve the others: sixteen slow queries from one user take only their own
//! slots, the rest are refused with when to retry, and another organisation's `select 1` is
//! answered while they are still running; walking away from queries does not free their slots.

use std::time::{Duration, Instant};

use internal_mcp::config::Endpoint;
use serde_json::json;

use crate::support::{TestApp, call, success, text};

#[tokio::test]
async fn sixteen_slow_queries_from_one_caller_leave_another_organisation_answered() {
    let app = TestApp::spawn().await;
    let flooder = std::sync::Arc::new(app.client(Endpoint::Sql, "acme", "dana").await);
    let other = app.client(Endpoint::Sql, "globex", "mei").await;
    // Warm the other client's path once, so its figure is the query's, not the first connection's.
    success(&call(&other, "run_select", json!({"sql": "SELECT 1 AS one"})).await);

    let started = Instant::now();
    let slow = (0..16).map(|_| {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            let result = call(
                &flooder,
                "run_select",
                json!({"sql": "SELECT pg_sleep(2) AS slept"}),
            )
            .await;
            (result, started.elapsed())
        })
    });
    let slow: Vec<_> = slow.collect();
    // Let the flood take its slots.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = Instant::now();
    let answered = success(&call(&other, "run_select", json!({"sql": "SELECT 1 AS one"})).await);
    let latency = asked.elapsed();
    let answered_at = started.elapsed();
    assert_eq!(answered["rows"], json!([[1]]));
    eprintln!(
        "another organisation's select 1 during the flood: {:.1} ms",
        latency.as_secs_f64() * 1000.0
    );

    let mut refused = 0;
    let mut last_slow_finished = Duration::ZERO;
    for handle in slow {
        let (result, finished) = handle.await.unwrap();
        if result.is_error == Some(true) {
            let message = text(&result);
            assert!(
                message.contains("too many queries in flight") && message.contains("retry in"),
                "{message}"
            );
            refused += 1;
        } else {
            last_slow_finished = last_slow_finished.max(finished);
        }
    }
    eprintln!(
        "{refused} of 16 slow queries refused at once; the admitted ones finished after {last_slow_finished:?}"
    );
    assert!(refused >= 14, "only {refused} of 16 were refused");
    assert!(
        answered_at < last_slow_finished,
        "the other organisation waited for the flood ({answered_at:?} vs {last_slow_finished:?})"
    );
}

/// A caller that walks away from its queries (the client disconnects mid-call) still holds their
/// slots until PostgreSQL has finished them, so disconnecting cannot run more queries at once than
/// the per-caller limit: a reader connection stays busy until its query ends either way.
#[tokio::test]
async fn queries_whose_client_went_away_keep_their_slots_until_they_end() {
    let app = TestApp::spawn().await;
    let walker = std::sync::Arc::new(app.client(Endpoint::Sql, "acme", "dana").await);
    let abandoned: Vec<_> = (0..2)
        .map(|_| {
            let walker = walker.clone();
            tokio::spawn(async move {
                call(
                    &walker,
                    "run_select",
                    json!({"sql": "SELECT pg_sleep(2.5) AS slept"}),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for call in &abandoned {
        call.abort();
    }
    drop(walker);
    // The server sees both clients go: the audit trail says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cancelled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM internal_mcp_audit_log WHERE message LIKE 'cancelled by the client%'",
        )
        .fetch_one(app.pool())
        .await
        .unwrap();
        if cancelled == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{cancelled} cancellations recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Their queries are still running: the same user gets no third slot.
    let returned = app.client(Endpoint::Sql, "acme", "dana").await;
    let refused = call(&returned, "run_select", json!({"sql": "SELECT 1 AS one"})).await;
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    assert!(
        text(&refused).contains("too many queries in flight"),
        "{}",
        text(&refused)
    );
    // Once they ended, the slots are free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = call(&returned, "run_select", json!({"sql": "SELECT 1 AS one"})).await;
        if result.is_error != Some(true) {
            assert_eq!(success(&result)["rows"], json!([[1]]));
            break;
        }
        assert!(Instant::now() < deadline, "{}", text(&result));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
