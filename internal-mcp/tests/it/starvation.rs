//! One caller cannot starve the others: sixteen slow queries from one user take only their own
//! slots, the rest are refused with when to retry, and another organisation's `select 1` is
//! answered while they are still running.

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
