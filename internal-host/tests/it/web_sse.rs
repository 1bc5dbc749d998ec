//! The event stream: every event of a conversation arrives with `id: <sequence>`, a reconnect with
//! `Last-Event-ID` resumes after exactly that event, and events appended later arrive live.

use std::time::Duration;

use internal_host::events::TurnEvent;
use reqwest::StatusCode;

use crate::web_support::{Browser, WebApp};

/// Reads the stream until `count` events have arrived; returns their ids and data.
async fn read_events(
    browser: &Browser,
    path: &str,
    last_event_id: Option<i64>,
    count: usize,
) -> Vec<(i64, serde_json::Value)> {
    let mut request = browser.client.get(format!("{}{path}", browser.base));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let sent = std::time::Instant::now();
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buffer = String::new();
    let mut events = Vec::new();
    // Only a guard against a hang, not a measurement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the events arrive")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().parse::<i64>().unwrap());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(value.trim()).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                if events.is_empty() {
                    println!(
                        "first event of {path} after {} µs",
                        sent.elapsed().as_micros()
                    );
                }
                events.push((id, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn a_reconnect_resumes_after_the_last_event_and_loses_nothing() {
    let app = WebApp::start().await;
    let browser = app.signed_in("acme", "marcus").await;
    let conversation = browser.ask_new("stream this").await;
    let turn = app.last_turn(conversation).await;
    app.settled(turn).await;
    let stored: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE conversation_id = $1 ORDER BY sequence",
    )
    .bind(conversation)
    .fetch_all(app.host())
    .await
    .unwrap();
    assert!(stored.len() >= 5, "{stored:?}");
    let path = format!("/conversations/{conversation}/events");

    let all = read_events(&browser, &path, None, stored.len()).await;
    let ids: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, stored);
    assert_eq!(all[0].1["event"]["kind"], "turn_started");
    assert_eq!(all[0].1["turn_id"], turn.to_string());
    let text: String = all
        .iter()
        .filter(|(_, data)| data["event"]["kind"] == "text")
        .map(|(_, data)| data["event"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "The answer to your question is **42**.");

    // A reconnect after the third event gets exactly the rest, then what is appended live.
    let middle = stored[2];
    let rest = stored.len() - 3;
    let reader = {
        let browser_path = path.clone();
        let client = browser.client.clone();
        let base = browser.base.clone();
        tokio::spawn(async move {
            let browser = Browser {
                client,
                jar: Default::default(),
                base,
                csrf: String::new(),
            };
            read_events(&browser, &browser_path, Some(middle), rest + 2).await
        })
    };
    // Appended while the reader waits (and perhaps before it subscribed: nothing is lost).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for text in ["live one", "live two"] {
        app.state
            .events()
            .append(conversation, turn, &TurnEvent::Notice { text: text.into() })
            .await
            .unwrap();
    }
    let resumed = reader.await.unwrap();
    let resumed_ids: Vec<i64> = resumed.iter().map(|(id, _)| *id).collect();
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE conversation_id = $1 AND sequence > $2 ORDER BY sequence",
    )
    .bind(conversation)
    .bind(middle)
    .fetch_all(app.host())
    .await
    .unwrap();
    assert_eq!(resumed_ids, expected);
    assert_eq!(resumed.last().unwrap().1["event"]["text"], "live two");

    // `?after=` (the page's starting point) works the same; a bad value is refused.
    let after = read_events(&browser, &format!("{path}?after={}", stored[3]), None, 1).await;
    assert_eq!(after[0].0, stored[4]);
    let bad = browser.get(&format!("{path}?after=abc")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = browser
        .client
        .get(format!("{}{path}", browser.base))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
