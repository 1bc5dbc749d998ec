//! The write tools a responder uses, against a backend of their own: open, acknowledge, add a
//! note, resolve; repeated calls report "no change"; a retried creation never duplicates.

use external_mcp::api::{ApiClient, NewIncident};
use external_mcp::config::ApiOptions;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, token};
use crate::clients::{as_user, call, failed, ok_call, strings};

#[tokio::test]
async fn a_responder_opens_acknowledges_annotates_and_resolves_an_incident() {
    let backend = Backend::start().await;
    let client = as_user(&backend, "acme", "responder").await;

    let alerts = ok_call(&client, "list_alerts", json!({ "limit": 50 })).await;
    let unlinked = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["incident_id"].is_null())
        .expect("the seed has alerts outside incidents")
        .clone();
    let alert_id = unlinked["id"].as_str().map(str::to_owned);
    let opened = ok_call(
        &client,
        "open_incident",
        json!({
            "title": "Cart totals wrong for some users",
            "severity": "high",
            "summary": "Reported by support",
            "services": ["cart-service", "pricing-service"],
            "alert_ids": alert_id.iter().collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(opened["changed"], true);
    assert_eq!(opened["status"], "open");
    let reference = opened["reference"]
        .as_str()
        .expect("a reference")
        .to_owned();
    assert_eq!(reference, "INC-7", "the seed planted six incidents in acme");
    assert!(
        opened["web_url"]
            .as_str()
            .unwrap()
            .starts_with("https://monitoring.example.com/incidents/")
    );

    let view = ok_call(&client, "get_incident", json!({ "incident": reference })).await;
    let services = strings(
        &view["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| json!({ "name": name }))
            .collect(),
        "name",
    );
    for expected in [
        "cart-service",
        "pricing-service",
        unlinked["service"].as_str().unwrap(),
    ] {
        assert!(
            services.contains(&expected.to_owned()),
            "{expected} missing from {services:?}: a linked alert's service is affected too"
        );
    }
    assert!(strings(&view["alerts"], "id").contains(alert_id.as_ref().unwrap()));
    assert_eq!(view["created_by"], "Marcus Oyelaran");

    let acknowledged = ok_call(
        &client,
        "acknowledge_incident",
        json!({ "incident": reference }),
    )
    .await;
    assert_eq!(
        (
            acknowledged["changed"].clone(),
            acknowledged["status"].clone()
        ),
        (json!(true), json!("acknowledged"))
    );
    let again = ok_call(
        &client,
        "acknowledge_incident",
        json!({ "incident": reference }),
    )
    .await;
    assert_eq!(
        again["changed"], false,
        "acknowledging twice changes nothing: {again}"
    );

    let note = ok_call(
        &client,
        "add_incident_note",
        json!({ "incident": reference, "note": "Rounding bug in the tax step" }),
    )
    .await;
    assert_eq!(note["note"]["kind"], "note");
    assert_eq!(note["note"]["author"], "Marcus Oyelaran");
    let empty_note = call(
        &client,
        "add_incident_note",
        json!({ "incident": reference, "note": "  " }),
    )
    .await;
    failed(&empty_note, &["`note`"]);

    let resolved = ok_call(
        &client,
        "resolve_incident",
        json!({ "incident": reference, "resolution": "Hotfix v1.2.1 deployed" }),
    )
    .await;
    assert_eq!(
        (resolved["changed"].clone(), resolved["status"].clone()),
        (json!(true), json!("resolved"))
    );
    let again = ok_call(
        &client,
        "resolve_incident",
        json!({ "incident": reference }),
    )
    .await;
    assert_eq!(again["changed"], false);
    let late = call(
        &client,
        "acknowledge_incident",
        json!({ "incident": reference }),
    )
    .await;
    failed(
        &late,
        &[
            "Could not acknowledge the incident",
            "resolved",
            "get_incident",
        ],
    );

    let view = ok_call(&client, "get_incident", json!({ "incident": reference })).await;
    let bodies = strings(&view["timeline"], "body");
    assert!(
        bodies.contains(&"Rounding bug in the tax step".to_owned()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&"Hotfix v1.2.1 deployed".to_owned()),
        "{bodies:?}"
    );

    let invalid = call(
        &client,
        "open_incident",
        json!({ "title": "x", "severity": "apocalyptic" }),
    )
    .await;
    failed(&invalid, &["apocalyptic", "expected one of"]);
    let unknown_service = call(
        &client,
        "open_incident",
        json!({ "title": "x", "severity": "low", "services": ["nope-api"] }),
    )
    .await;
    failed(&unknown_service, &["no service is named `nope-api`"]);
}

/// The client sends one `Idempotency-Key` per logical call and reuses it on retry: the API then
/// answers the retry with the incident the first attempt created.
#[tokio::test]
async fn a_retried_creation_with_its_key_never_duplicates() {
    let backend = Backend::start().await;
    let api = ApiClient::new(backend.url.parse().unwrap(), ApiOptions::default()).unwrap();
    let caller = api.for_caller(
        token("globex", "responder").parse().unwrap(),
        CancellationToken::new(),
    );
    let body = NewIncident {
        title: "Label printers offline in Rotterdam".into(),
        severity: "medium".into(),
        summary: String::new(),
        service_ids: vec![],
        alert_ids: vec![],
    };
    let first = caller
        .create_incident(&body, "retry-test-key")
        .await
        .expect("created");
    let retry = caller
        .create_incident(&body, "retry-test-key")
        .await
        .expect("replayed");
    assert_eq!(first.incident.id, retry.incident.id);
    let other = caller
        .create_incident(&body, "another-key")
        .await
        .expect("created");
    assert_ne!(first.incident.id, other.incident.id);
}
