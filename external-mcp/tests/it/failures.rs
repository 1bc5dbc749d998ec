//! When things go wrong: the backend is down or silent, the client cancels, the API rate-limits.
//! Each is a tool result with `isError` and an actionable message, and the server keeps serving.

use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ClientRequest, Request};
use rmcp::service::PeerRequestOptions;
use serde_json::json;

use crate::backend::{Backend, SEED_UNTIL, black_hole, closed_port_url, token};
use crate::clients::{call, failed, fixed, in_process, ok_call, settings, tool_names};

#[tokio::test]
async fn a_backend_that_is_down_is_a_tool_error_and_the_server_keeps_running() {
    let down = closed_port_url();
    let client = in_process(settings(&down), fixed("dmo_any_token")).await;
    for _ in 0..2 {
        let result = call(&client, "find_services", json!({})).await;
        failed(
            &result,
            &[&format!("cannot reach the API at {down}"), "DEMO_API_URL"],
        );
    }
    assert_eq!(
        tool_names(&client).await.len(),
        11,
        "the server still answers"
    );
}

#[tokio::test]
async fn a_silent_backend_times_out_with_advice() {
    let (silent, _closings) = black_hole().await;
    let mut slow = settings(&silent);
    slow.api.timeout = Duration::from_secs(1);
    let client = in_process(slow, fixed("dmo_any_token")).await;
    let started = Instant::now();
    let result = call(&client, "list_incidents", json!({})).await;
    failed(&result, &["did not answer within 1 s", "try again"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Cancelling a call drops its request to the API at once (the connection closes), long before
/// the API timeout.
#[tokio::test]
async fn a_cancelled_call_abandons_its_api_request() {
    let (silent, mut closings) = black_hole().await;
    let mut patient = settings(&silent);
    patient.api.timeout = Duration::from_secs(60);
    let client = in_process(patient, fixed("dmo_any_token")).await;
    let request =
        ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("find_services")));
    let handle = client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .expect("cancelled");
    let closed = tokio::time::timeout(Duration::from_secs(5), closings.recv()).await;
    assert!(closed.is_ok(), "the API request was not abandoned");
    assert_eq!(
        tool_names(&client).await.len(),
        11,
        "the server still answers"
    );
}

/// A burst of 2 then one request per second: the summary's eight API calls meet 429s, wait as
/// `Retry-After` says, and the tool still succeeds.
#[tokio::test]
async fn rate_limited_calls_wait_as_told_and_succeed() {
    let backend =
        Backend::start_with(&["--rate-limit-burst", "2", "--rate-limit-per-minute", "60"]).await;
    let client = in_process(settings(&backend.url), fixed(&token("acme", "viewer"))).await;
    let started = Instant::now();
    let summary = ok_call(
        &client,
        "metric_summary",
        json!({ "service": "checkout-api", "metric": "latency_p95_ms", "window": "6h", "end": SEED_UNTIL }),
    )
    .await;
    assert!(summary["max"].as_f64().is_some());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the limit was honoured: {:?}",
        started.elapsed()
    );
}

/// When the API asks for a longer wait than the server may spend, the tool says how long to wait.
#[tokio::test]
async fn a_long_rate_limit_wait_is_reported_not_slept() {
    let backend =
        Backend::start_with(&["--rate-limit-burst", "1", "--rate-limit-per-minute", "1"]).await;
    let client = in_process(settings(&backend.url), fixed(&token("acme", "viewer"))).await;
    let started = Instant::now();
    // The token check takes the only request of the minute; the listing is refused.
    let result = call(&client, "list_incidents", json!({})).await;
    failed(&result, &["rate limit", "Wait"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
