//! The read-only incident tools automation uses: new incidents keyset-paged oldest first (every
//! incident once, whatever the page size), one incident with its timeline, and the alerts around it.

use internal_mcp::config::Endpoint;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, call, failure, story, success, time};

#[tokio::test]
async fn paging_new_incidents_returns_each_incident_once_oldest_first() {
    let app = TestApp::spawn().await;
    let organization = app.organization_id("acme").await;
    let expected: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM incidents WHERE organization_id = $1 ORDER BY opened_at, id",
    )
    .bind(organization)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(expected.len() >= 3);
    let client = app.client(Endpoint::Incidents, "acme", "sam").await;
    let mut arguments = json!({"since": "2000-01-01T00:00:00Z", "limit": 2});
    let mut seen: Vec<Uuid> = Vec::new();
    loop {
        let page = success(&call(&client, "list_incidents_opened_since", arguments.clone()).await);
        for incident in page["incidents"].as_array().unwrap() {
            seen.push(incident["id"].as_str().unwrap().parse().unwrap());
            assert!(incident["reference"].as_str().unwrap().starts_with("INC-"));
            assert!(
                !incident["services"].as_array().unwrap().is_empty(),
                "{incident}"
            );
        }
        match &page["next"] {
            Value::Null => break,
            next => {
                arguments =
                    json!({"since": next["since"], "after_id": next["after_id"], "limit": 2})
            }
        }
    }
    assert_eq!(
        seen, expected,
        "only acme's incidents, each once, oldest first"
    );

    let refused = failure(
        &call(
            &client,
            "list_incidents_opened_since",
            json!({"since": "2000-01-01T00:00:00Z", "after_id": "not-an-id"}),
        )
        .await,
    );
    assert!(refused.contains("after_id"), "{refused}");
    let refused = failure(
        &call(
            &client,
            "list_incidents_opened_since",
            json!({"since": "2000-01-01T00:00:00Z", "limit": 0}),
        )
        .await,
    );
    assert!(refused.contains("limit"), "{refused}");
}

#[tokio::test]
async fn an_incident_comes_with_its_timeline_and_the_alerts_around_it() {
    let app = TestApp::spawn().await;
    let story = story("acme");
    let organization = app.organization_id("acme").await;
    let number: i32 = sqlx::query_scalar(
        "SELECT number FROM incidents WHERE organization_id = $1 AND title = $2",
    )
    .bind(organization)
    .bind(story.incident_title)
    .fetch_one(app.pool())
    .await
    .unwrap();
    let client = app.client(Endpoint::Incidents, "acme", "sam").await;
    let reference = format!("INC-{number}");
    let detail = success(&call(&client, "get_incident", json!({"incident": reference})).await);
    assert_eq!(detail["incident"]["title"], story.incident_title);
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"opened"), "{detail}");
    assert!(
        kinds.contains(&"note") && kinds.contains(&"resolved"),
        "{kinds:?}"
    );

    let alerts = success(&call(&client, "incident_alerts", json!({"incident": reference})).await);
    let linked: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["linked"] == true)
        .collect();
    assert!(!linked.is_empty(), "{alerts}");
    assert_eq!(linked[0]["service"], story.service);
    assert!(time(&linked[0]["started_at"]) >= story.spike_start);

    // Another organisation's incident is not there.
    let globex = app.client(Endpoint::Incidents, "globex", "ana").await;
    let id = detail["incident"]["id"].as_str().unwrap();
    let refused = failure(&call(&globex, "get_incident", json!({"incident": id})).await);
    assert!(refused.contains("no incident"), "{refused}");
}
