//! Writing endpoints: the incident lifecycle, idempotency, hostile input, tenant isolation, rate limits.
//!
//! Tables of cases carry `#[rustfmt::skip]` so that each case stays on one line.

use chrono::{DateTime, Utc};
use demo_backend::domain::kinds::{Role, Scope};
use demo_backend::http::RateLimit;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{
    Seeded, TestApp, expect_json, expect_problem, seeded_database, table_counts, token_for,
};

const INCIDENTS: &str = "/api/v1/incidents";
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
const JSON: Headers = &[("content-type", "application/json")];
const NO_HEADERS: Headers = &[];

/// Request headers as name and value.
type Headers<'a> = &'a [(&'a str, &'a str)];

// ---------------------------------------------------------------------------------------------
// The incident state machine
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_an_incident_answers_201_with_location_services_alerts_and_an_opened_timeline() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let caller = me(&app, &token).await;
    let checkout = service_id(app.pool(), "acme", "checkout-api").await;
    let cart_alert = insert_firing_alert(app.pool(), "acme", "cart-service", "cart p95 high").await;
    let payments_alert = insert_firing_alert(app.pool(), "acme", "payments-gateway", "5xx").await;
    let expected_number = highest_incident_number(app.pool(), "acme").await + 1;
    let before = table_counts(app.pool()).await;

    let body = json!({
        "title": "  Checkout is failing for card payments  ",
        "severity": "critical",
        "summary": "Card payments fail with 502",
        "service_ids": [checkout],
        "alert_ids": [cart_alert, payments_alert],
    });
    let response = app.post(INCIDENTS, &token, &body).await;
    let location = header(&response, "location");
    assert_eq!(
        header(&response, IDEMPOTENT_REPLAYED),
        None,
        "a first creation is no replay"
    );
    let incident = expect_json(response, StatusCode::CREATED).await;

    let id = id_of(&incident);
    assert_eq!(location, Some(format!("{INCIDENTS}/{id}")));
    assert_eq!(incident["number"], expected_number);
    assert_eq!(incident["reference"], format!("INC-{expected_number}"));
    assert_eq!(
        incident["title"], "Checkout is failing for card payments",
        "stored trimmed"
    );
    assert_eq!(incident["summary"], "Card payments fail with 502");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["status"], "open");
    assert_eq!(incident["created_by"]["id"], caller["user"]["id"]);
    assert_eq!(incident["commander"], Value::Null);
    assert_eq!(incident["acknowledged_at"], Value::Null);
    assert_eq!(incident["resolved_at"], Value::Null);
    assert_eq!(
        names(&incident["services"]),
        ["cart-service", "checkout-api", "payments-gateway"],
        "the named service and the linked alerts' services, by name"
    );
    let mut linked = ids(&incident["alerts"]);
    linked.sort_unstable();
    let mut expected_alerts = [cart_alert.to_string(), payments_alert.to_string()];
    expected_alerts.sort_unstable();
    assert_eq!(linked, expected_alerts);
    for alert in incident["alerts"].as_array().unwrap() {
        assert_eq!(alert["incident_id"], id);
    }

    let timeline = incident["timeline"].as_array().unwrap();
    assert_eq!(
        kinds(&incident["timeline"]),
        ["opened", "alert_linked", "alert_linked"]
    );
    assert_eq!(timeline[0]["body"], "Checkout is failing for card payments");
    assert_eq!(timeline[1]["body"], "cart p95 high");
    assert_eq!(timeline[2]["body"], "5xx");
    for event in timeline {
        assert_eq!(event["author"]["id"], caller["user"]["id"], "{event}");
    }

    let after = table_counts(app.pool()).await;
    assert_eq!(
        count_of(&after, "incidents"),
        count_of(&before, "incidents") + 1
    );
    assert_eq!(
        count_of(&after, "incident_services"),
        count_of(&before, "incident_services") + 3
    );
    assert_eq!(
        count_of(&after, "incident_events"),
        count_of(&before, "incident_events") + 3
    );
    for alert in [cart_alert, payments_alert] {
        assert_eq!(
            alert_incident(app.pool(), alert).await,
            Some(id.parse().unwrap())
        );
    }
    let fetched = app.get_json(&location.unwrap(), &token).await;
    assert_eq!(
        fetched, incident,
        "the Location header points at the incident as created"
    );
}

#[tokio::test]
async fn the_state_machine_allows_acknowledge_then_resolve_and_refuses_the_rest_with_409() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let first = open_incident(
        &app,
        &token,
        json!({"title": "Slow search", "severity": "high"}),
    )
    .await;
    let second = open_incident(
        &app,
        &token,
        json!({"title": "Stale prices", "severity": "low"}),
    )
    .await;
    let (a, b) = (id_of(&first), id_of(&second));

    #[rustfmt::skip]
    let steps: &[(&str, &str, Option<&str>, u16, &str)] = &[
        // incident, action, body, expected status, status afterwards
        (a, "acknowledge", None,                                  200, "acknowledged"),
        (a, "acknowledge", None,                                  409, "acknowledged"),
        (a, "resolve",     Some(r#"{"note": "rolled back 4.2"}"#), 200, "resolved"),
        (a, "resolve",     None,                                  409, "resolved"),
        (a, "resolve",     Some(r#"{"note": "again"}"#),           409, "resolved"),
        (a, "acknowledge", None,                                  409, "resolved"),
        (b, "resolve",     None,                                  200, "resolved"),
        (b, "acknowledge", None,                                  409, "resolved"),
        (b, "resolve",     Some("{}"),                            409, "resolved"),
    ];
    for &(id, action, body, expected, status_after) in steps {
        check_transition(&app, &token, id, action, body, expected, status_after).await;
    }

    let (_, opened_at, acknowledged_at, resolved_at) = incident_row(app.pool(), a).await;
    let acknowledged_at = acknowledged_at.expect("acknowledged_at stays set after resolving");
    let resolved_at = resolved_at.expect("resolved_at is set");
    assert!(
        opened_at <= acknowledged_at,
        "{opened_at} {acknowledged_at}"
    );
    assert!(
        acknowledged_at <= resolved_at,
        "{acknowledged_at} {resolved_at}"
    );
    let (_, opened_at, acknowledged_at, resolved_at) = incident_row(app.pool(), b).await;
    assert_eq!(
        acknowledged_at, None,
        "resolving an open incident acknowledges nothing"
    );
    assert!(opened_at <= resolved_at.unwrap());

    let detail = app.get_json(&format!("{INCIDENTS}/{a}"), &token).await;
    let entries: Vec<(&str, &str)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["kind"].as_str().unwrap(),
                event["body"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("opened", "Slow search"),
            ("acknowledged", ""),
            ("resolved", "rolled back 4.2")
        ]
    );
    let detail = app.get_json(&format!("{INCIDENTS}/{b}"), &token).await;
    assert_eq!(kinds(&detail["timeline"]), ["opened", "resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acknowledgements_of_one_incident_succeed_once_and_write_one_event() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Race", "severity": "high"})).await;
    let path = format!("{INCIDENTS}/{}/acknowledge", id_of(&incident));

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let request = app.request(Method::POST, &path, Some(&token));
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    let mut statuses = requests.join_all().await;
    statuses.sort_unstable();

    let mut expected = vec![StatusCode::OK];
    expected.extend([StatusCode::CONFLICT; 5]);
    assert_eq!(statuses, expected);
    assert_eq!(
        event_count(app.pool(), id_of(&incident)).await,
        2,
        "opened, acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_take_distinct_consecutive_numbers() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let start = highest_incident_number(app.pool(), "acme").await;

    let mut requests = tokio::task::JoinSet::new();
    for attempt in 0..8 {
        let body = json!({"title": format!("parallel {attempt}"), "severity": "low"});
        let request = app
            .request(Method::POST, INCIDENTS, Some(&token))
            .json(&body);
        requests.spawn(async move { request.send().await.unwrap() });
    }
    let mut numbers = Vec::new();
    for response in requests.join_all().await {
        let incident = expect_json(response, StatusCode::CREATED).await;
        numbers.push(incident["number"].as_i64().unwrap());
    }
    numbers.sort_unstable();

    assert_eq!(numbers, (start + 1..=start + 8).collect::<Vec<_>>());
}

#[tokio::test]
async fn incident_numbers_increase_per_organisation_independently() {
    let (app, seeded) = seeded_app().await;
    let acme = seeded.token("acme", Role::Responder);
    let globex = seeded.token("globex", Role::Responder);
    let acme_start = highest_incident_number(app.pool(), "acme").await;
    let globex_start = highest_incident_number(app.pool(), "globex").await;

    let mut numbers = Vec::new();
    for token in [&acme, &globex, &acme, &acme, &globex] {
        let incident = open_incident(&app, token, json!({"title": "t", "severity": "low"})).await;
        assert_eq!(incident["reference"], format!("INC-{}", incident["number"]));
        numbers.push(incident["number"].as_i64().unwrap());
    }

    assert_eq!(
        numbers,
        [
            acme_start + 1,
            globex_start + 1,
            acme_start + 2,
            acme_start + 3,
            globex_start + 2
        ],
        "acme started after {acme_start}, globex after {globex_start}"
    );
}

// ---------------------------------------------------------------------------------------------
// Notes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_note_is_created_with_201_and_ends_the_timeline_even_on_a_resolved_incident() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let caller = me(&app, &token).await;
    let incident = open_incident(&app, &token, json!({"title": "Carts", "severity": "high"})).await;
    let id = id_of(&incident);

    for (resolve_first, body) in [
        (false, "Looking at the session store"),
        (true, "Postmortem"),
    ] {
        if resolve_first {
            resolve(&app, &token, id).await;
        }
        let events_before = event_count(app.pool(), id).await;
        let path = format!("{INCIDENTS}/{id}/notes");
        let response = app.post(&path, &token, &json!({"body": body})).await;
        let note = expect_json(response, StatusCode::CREATED).await;
        assert_eq!(note["kind"], "note");
        assert_eq!(note["body"], body);
        assert_eq!(note["author"]["id"], caller["user"]["id"]);
        assert_eq!(
            event_count(app.pool(), id).await,
            events_before + 1,
            "one note, one event"
        );
        let detail = app.get_json(&format!("{INCIDENTS}/{id}"), &token).await;
        assert_eq!(
            detail["timeline"].as_array().unwrap().last(),
            Some(&note),
            "{body}"
        );
    }
}

#[tokio::test]
async fn note_bodies_empty_blank_or_over_10000_characters_are_refused_with_422_naming_body() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident =
        open_incident(&app, &token, json!({"title": "Refunds", "severity": "low"})).await;
    let path = format!("{INCIDENTS}/{}/notes", id_of(&incident));

    let check = async |body: String, expected: StatusCode| {
        let before = snapshot(app.pool()).await;
        let response = app.post(&path, &token, &json!({"body": body})).await;
        if expected == StatusCode::CREATED {
            assert_eq!(expect_json(response, expected).await["body"], body.as_str());
            return;
        }
        let problem = expect_problem(response, expected, "invalid_field").await;
        assert_eq!(
            problem["field"],
            "body",
            "{} characters",
            body.chars().count()
        );
        assert_nothing_written(&before, &snapshot(app.pool()).await, "a refused note");
    };

    check(String::new(), StatusCode::UNPROCESSABLE_ENTITY).await;
    check(" ".into(), StatusCode::UNPROCESSABLE_ENTITY).await;
    check(" \n\t \u{3000}".into(), StatusCode::UNPROCESSABLE_ENTITY).await;
    check("x".repeat(10_001), StatusCode::UNPROCESSABLE_ENTITY).await;
    check("é".repeat(10_001), StatusCode::UNPROCESSABLE_ENTITY).await;
    check("x".repeat(10_000), StatusCode::CREATED).await;
    check("é".repeat(10_000), StatusCode::CREATED).await;
    check("a".into(), StatusCode::CREATED).await;
}

// ---------------------------------------------------------------------------------------------
// Linking alerts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn linking_an_alert_sets_its_incident_and_service_and_linking_it_again_changes_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let caller = me(&app, &token).await;
    let checkout = service_id(app.pool(), "acme", "checkout-api").await;
    let body = json!({"title": "Checkout slow", "severity": "high", "service_ids": [checkout]});
    let incident = open_incident(&app, &token, body).await;
    let id = id_of(&incident);
    let alert = insert_firing_alert(app.pool(), "acme", "search-api", "search p95 high").await;
    let path = format!("{INCIDENTS}/{id}/alerts");

    let response = app.post(&path, &token, &json!({"alert_id": alert})).await;
    let linked = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        alert_incident(app.pool(), alert).await,
        Some(id.parse().unwrap())
    );
    assert_eq!(names(&linked["services"]), ["checkout-api", "search-api"]);
    assert_eq!(ids(&linked["alerts"]), [alert.to_string()]);
    let last = linked["timeline"].as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "alert_linked");
    assert_eq!(last["body"], "search p95 high");
    assert_eq!(last["author"]["id"], caller["user"]["id"]);

    let before = snapshot(app.pool()).await;
    let response = app.post(&path, &token, &json!({"alert_id": alert})).await;
    let again = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        again, linked,
        "linking the same alert again answers the same incident"
    );
    assert_nothing_written(
        &before,
        &snapshot(app.pool()).await,
        "linking an alert twice",
    );
}

#[tokio::test]
async fn linking_a_taken_alert_or_to_a_resolved_incident_is_409_and_unknown_ids_are_404() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let taken = insert_firing_alert(app.pool(), "acme", "cart-service", "cart errors").await;
    let free = insert_firing_alert(app.pool(), "acme", "order-service", "orders slow").await;
    let owner_body = json!({"title": "Cart errors", "severity": "high", "alert_ids": [taken]});
    let owner = open_incident(&app, &token, owner_body).await;
    let open = open_incident(&app, &token, json!({"title": "Open", "severity": "low"})).await;
    let resolved = open_incident(&app, &token, json!({"title": "Old", "severity": "low"})).await;
    resolve(&app, &token, id_of(&resolved)).await;
    let before = snapshot(app.pool()).await;
    let unknown_incident = Uuid::now_v7().to_string();

    #[rustfmt::skip]
    let cases: &[(&str, Uuid, StatusCode, &str)] = &[
        (id_of(&open),      taken,           StatusCode::CONFLICT,  "conflict"),
        (id_of(&resolved),  free,            StatusCode::CONFLICT,  "conflict"),
        (id_of(&resolved),  taken,           StatusCode::CONFLICT,  "conflict"),
        (id_of(&owner),     Uuid::now_v7(),  StatusCode::NOT_FOUND, "not_found"),
        (&unknown_incident, free,            StatusCode::NOT_FOUND, "not_found"),
    ];
    for &(incident, alert, status, code) in cases {
        let path = format!("{INCIDENTS}/{incident}/alerts");
        let response = app.post(&path, &token, &json!({"alert_id": alert})).await;
        expect_problem(response, status, code).await;
        assert_nothing_written(
            &before,
            &snapshot(app.pool()).await,
            &format!("{alert} to {path}"),
        );
    }
    assert_eq!(
        alert_incident(app.pool(), taken).await,
        Some(id_of(&owner).parse().unwrap())
    );
    assert_eq!(alert_incident(app.pool(), free).await, None);
}

// ---------------------------------------------------------------------------------------------
// Validation of creation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_incident_creations_are_refused_with_404_409_or_422_and_write_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let checkout = service_id(app.pool(), "acme", "checkout-api").await;
    let taken = insert_firing_alert(app.pool(), "acme", "cart-service", "cart errors").await;
    let free = insert_firing_alert(app.pool(), "acme", "order-service", "orders slow").await;
    let owner = json!({"title": "Owner", "severity": "low", "alert_ids": [taken]});
    open_incident(&app, &token, owner).await;
    let before = snapshot(app.pool()).await;
    let unknown = Uuid::now_v7();
    let fifty_one: Vec<Uuid> = (0..51).map(|_| checkout).collect();
    let (x201, e201, s10001) = ("x".repeat(201), "é".repeat(201), "s".repeat(10_001));

    #[rustfmt::skip]
    let cases = [
        (json!({"title": "",         "severity": "high"}),                                 422, "invalid_field", Some("title")),
        (json!({"title": "   \t\n ", "severity": "high"}),                                 422, "invalid_field", Some("title")),
        (json!({"title": x201,       "severity": "high"}),                                 422, "invalid_field", Some("title")),
        (json!({"title": e201,       "severity": "high"}),                                 422, "invalid_field", Some("title")),
        (json!({"title": "t",        "severity": "high", "summary": s10001}),              422, "invalid_field", Some("summary")),
        (json!({"title": "t",        "severity": "high", "service_ids": fifty_one}),       422, "invalid_field", Some("service_ids")),
        (json!({"title": "t",        "severity": "high", "service_ids": [unknown]}),       404, "not_found",     None),
        (json!({"title": "t",        "severity": "high", "service_ids": [checkout, unknown]}), 404, "not_found", None),
        (json!({"title": "t",        "severity": "high", "commander_id": unknown}),        404, "not_found",     None),
        (json!({"title": "t",        "severity": "high", "alert_ids": [unknown]}),         404, "not_found",     None),
        (json!({"title": "t",        "severity": "high", "alert_ids": [free, unknown]}),   404, "not_found",     None),
        (json!({"title": "t",        "severity": "high", "alert_ids": [free, taken]}),     409, "conflict",      None),
    ];
    for (body, status, code, field) in cases {
        let response = app.post(INCIDENTS, &token, &body).await;
        let status = StatusCode::from_u16(status).unwrap();
        let problem = expect_problem(response, status, code).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{body}");
        }
        assert_nothing_written(&before, &snapshot(app.pool()).await, &body.to_string());
    }
    assert_eq!(
        alert_incident(app.pool(), free).await,
        None,
        "a refused creation links nothing"
    );
}

#[tokio::test]
async fn repeated_service_and_alert_ids_in_a_creation_are_linked_once() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let checkout = service_id(app.pool(), "acme", "checkout-api").await;
    let alert = insert_firing_alert(app.pool(), "acme", "auth-service", "logins failing").await;
    let body = json!({
        "title": "Logins",
        "severity": "high",
        "service_ids": [checkout, checkout],
        "alert_ids": [alert, alert],
    });

    let incident = open_incident(&app, &token, body).await;

    assert_eq!(
        names(&incident["services"]),
        ["auth-service", "checkout-api"]
    );
    assert_eq!(ids(&incident["alerts"]), [alert.to_string()]);
    assert_eq!(kinds(&incident["timeline"]), ["opened", "alert_linked"]);
}

#[tokio::test]
async fn titles_at_the_limits_and_with_odd_characters_are_stored_trimmed_and_literally() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let commander = me(&app, &seeded.token("acme", Role::Admin)).await["user"]["id"].clone();
    let (x200, e200, fire200) = ("x".repeat(200), "é".repeat(200), "🔥".repeat(200));
    let padded = format!("   {x200}\t\n ");

    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        // title sent, title stored
        (&x200,                                          &x200),
        (&e200,                                          &e200),
        (&fire200,                                       &fire200),
        (&padded,                                        &x200),
        ("a",                                            "a"),
        ("'); DELETE FROM incidents; --",                "'); DELETE FROM incidents; --"),
        ("Robert'); DROP TABLE services;--",             "Robert'); DROP TABLE services;--"),
        ("<script>alert(1)</script> {{7*7}} ${jndi:x}",  "<script>alert(1)</script> {{7*7}} ${jndi:x}"),
        ("bell\u{7} esc\u{1b}[31m del\u{7f} tab\there",  "bell\u{7} esc\u{1b}[31m del\u{7f} tab\there"),
        ("rtl\u{202e}override zero\u{200b}width \u{feff}", "rtl\u{202e}override zero\u{200b}width \u{feff}"),
    ];
    for &(title, stored) in cases {
        let body = json!({"title": title, "severity": "low", "commander_id": commander});
        let incident = open_incident(&app, &token, body).await;
        assert_eq!(incident["title"], stored);
        assert_eq!(incident["commander"]["id"], commander);
        assert_eq!(stored_title(app.pool(), id_of(&incident)).await, stored);
    }

    let counts = table_counts(app.pool()).await;
    assert!(
        count_of(&counts, "services") > 0,
        "tables intact: {counts:?}"
    );
    let services = app.get_json("/api/v1/services?limit=200", &token).await;
    assert!(
        !services["items"].as_array().unwrap().is_empty(),
        "services still listed"
    );
}

// ---------------------------------------------------------------------------------------------
// Idempotent creation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_idempotency_key_and_body_twice_creates_one_incident_and_replays_it() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let body = json!({"title": "Payments timing out", "severity": "critical"});
    let send = async || {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        request
            .header(IDEMPOTENCY_KEY, "retry-1")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let before = table_counts(app.pool()).await;

    let first = send().await;
    assert_eq!(header(&first, IDEMPOTENT_REPLAYED), None);
    let first_location = header(&first, "location");
    let first = expect_json(first, StatusCode::CREATED).await;
    let second = send().await;
    assert_eq!(
        header(&second, IDEMPOTENT_REPLAYED).as_deref(),
        Some("true")
    );
    assert_eq!(header(&second, "location"), first_location);
    let second = expect_json(second, StatusCode::CREATED).await;

    assert_eq!(second["id"], first["id"]);
    assert_eq!(second, first);
    let after = table_counts(app.pool()).await;
    assert_eq!(
        count_of(&after, "incidents"),
        count_of(&before, "incidents") + 1
    );
    assert_eq!(
        count_of(&after, "incident_events"),
        count_of(&before, "incident_events") + 1
    );
    assert_eq!(
        count_of(&after, "idempotency_keys"),
        count_of(&before, "idempotency_keys") + 1
    );
}

#[tokio::test]
async fn the_same_idempotency_key_with_a_different_body_is_refused_with_422_and_writes_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let send = async |body: &Value| {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        request
            .header(IDEMPOTENCY_KEY, "reused")
            .json(body)
            .send()
            .await
            .unwrap()
    };
    let first = send(&json!({"title": "First", "severity": "high"})).await;
    expect_json(first, StatusCode::CREATED).await;
    let before = snapshot(app.pool()).await;

    for body in [
        json!({"title": "Second", "severity": "high"}),
        json!({"title": "First", "severity": "low"}),
        json!({"title": "First", "severity": "high", "summary": "more"}),
    ] {
        let response = send(&body).await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = expect_problem(response, status, "invalid_field").await;
        assert_eq!(problem["field"], "Idempotency-Key", "{body}");
        assert_nothing_written(&before, &snapshot(app.pool()).await, &body.to_string());
    }
}

#[tokio::test]
async fn different_users_using_the_same_idempotency_key_each_create_their_own_incident() {
    let (app, seeded) = seeded_app().await;
    let body = json!({"title": "Search down", "severity": "critical"});
    let mut created = Vec::new();
    for (slug, role) in [
        ("acme", Role::Responder),
        ("acme", Role::Admin),
        ("globex", Role::Admin),
    ] {
        let token = seeded.token(slug, role);
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        let response = request
            .header(IDEMPOTENCY_KEY, "shared")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&response, IDEMPOTENT_REPLAYED),
            None,
            "{slug} {role:?} got a replay"
        );
        created.push(id_of(&expect_json(response, StatusCode::CREATED).await).to_owned());
    }
    created.sort_unstable();
    created.dedup();
    assert_eq!(created.len(), 3, "three users, three incidents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_requests_with_one_idempotency_key_create_exactly_one_incident() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let body = json!({"title": "Everything is on fire", "severity": "critical"});
    let before = table_counts(app.pool()).await;

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        let request = request.header(IDEMPOTENCY_KEY, "stampede").json(&body);
        requests.spawn(async move {
            let response = request.send().await.unwrap();
            let replayed = header(&response, IDEMPOTENT_REPLAYED);
            (response.status(), replayed, response.text().await.unwrap())
        });
    }
    let answers = requests.join_all().await;

    let mut created = Vec::new();
    for (status, _, text) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{text}");
        let incident: Value = serde_json::from_str(text).unwrap();
        created.push(id_of(&incident).to_owned());
    }
    created.dedup();
    assert_eq!(created.len(), 1, "every answer names the same incident");
    let fresh = answers
        .iter()
        .filter(|(_, replayed, _)| replayed.is_none())
        .count();
    let replayed = answers
        .iter()
        .filter(|(_, replayed, _)| replayed.as_deref() == Some("true"));
    assert_eq!(
        (fresh, replayed.count()),
        (1, 9),
        "one answer created it, nine replayed it"
    );
    let after = table_counts(app.pool()).await;
    assert_eq!(
        count_of(&after, "incidents"),
        count_of(&before, "incidents") + 1
    );
    assert_eq!(
        count_of(&after, "incident_events"),
        count_of(&before, "incident_events") + 1
    );
    assert_eq!(
        count_of(&after, "idempotency_keys"),
        count_of(&before, "idempotency_keys") + 1
    );
}

#[tokio::test]
async fn a_refused_creation_does_not_use_up_its_idempotency_key() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let refused = json!({"title": "t", "severity": "high", "service_ids": [Uuid::now_v7()]});
    let accepted = json!({"title": "t", "severity": "high"});
    let send = async |body: &Value| {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        request
            .header(IDEMPOTENCY_KEY, "after-404")
            .json(body)
            .send()
            .await
            .unwrap()
    };
    let before = snapshot(app.pool()).await;

    for _ in 0..2 {
        expect_problem(send(&refused).await, StatusCode::NOT_FOUND, "not_found").await;
        assert_nothing_written(&before, &snapshot(app.pool()).await, "a refused creation");
    }
    let response = send(&accepted).await;
    assert_eq!(header(&response, IDEMPOTENT_REPLAYED), None);
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn an_idempotency_key_is_replayed_for_24_hours_then_forgotten() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let body = json!({"title": "Ageing", "severity": "low"});
    let send = async |key: &str| {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        request
            .header(IDEMPOTENCY_KEY, key)
            .json(&body)
            .send()
            .await
            .unwrap()
    };

    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>)] = &[
        // key, age of its first use, Idempotent-Replayed of the retry
        ("fresh",     "1 minute",  Some("true")),
        ("yesterday", "23 hours",  Some("true")),
        ("expired",   "25 hours",  None),
        ("ancient",   "30 days",   None),
    ];
    for &(key, age, replayed) in cases {
        let first = expect_json(send(key).await, StatusCode::CREATED).await;
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - $2::interval WHERE key = $1")
            .bind(key)
            .bind(age)
            .execute(app.pool())
            .await
            .unwrap();
        let retry = send(key).await;
        assert_eq!(
            header(&retry, IDEMPOTENT_REPLAYED).as_deref(),
            replayed,
            "{key} {age}"
        );
        let retry = expect_json(retry, StatusCode::CREATED).await;
        assert_eq!(
            retry["id"] == first["id"],
            replayed.is_some(),
            "{key} {age}"
        );
    }
}

#[tokio::test]
async fn invalid_idempotency_keys_are_refused_with_422_and_write_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Keys", "severity": "low"})).await;
    let notes = format!("{INCIDENTS}/{}/notes", id_of(&incident));
    let create = json!({"title": "t", "severity": "high"});
    let note = json!({"body": "a note"});
    let before = snapshot(app.pool()).await;
    let (k256, k300) = ("k".repeat(256), "k".repeat(300));

    #[rustfmt::skip]
    let cases: &[(&str, &Value, &[u8])] = &[
        (INCIDENTS, &create, k300.as_bytes()),
        (INCIDENTS, &create, k256.as_bytes()),
        (INCIDENTS, &create, b"with space"),
        (INCIDENTS, &create, b"tab\tinside"),
        (INCIDENTS, &create, "café".as_bytes()),
        (INCIDENTS, &create, b""),
        (&notes,    &note,   k300.as_bytes()),
        (&notes,    &note,   b"with space"),
        (&notes,    &note,   "naïve".as_bytes()),
    ];
    for &(path, body, key) in cases {
        let shown = String::from_utf8_lossy(key);
        let key = reqwest::header::HeaderValue::from_bytes(key).unwrap();
        let request = app
            .request(Method::POST, path, Some(&token))
            .header(IDEMPOTENCY_KEY, key);
        let response = request.json(body).send().await.unwrap();
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = expect_problem(response, status, "invalid_field").await;
        assert_eq!(problem["field"], "Idempotency-Key", "{path} {shown:?}");
        assert_nothing_written(&before, &snapshot(app.pool()).await, &shown);
    }

    let request = app.request(Method::POST, INCIDENTS, Some(&token));
    let request = request.header(IDEMPOTENCY_KEY, "k".repeat(255));
    expect_json(
        request.json(&create).send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn an_idempotent_note_is_created_once_replayed_and_refused_for_a_different_request() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Notes", "severity": "low"})).await;
    let other = open_incident(&app, &token, json!({"title": "Other", "severity": "low"})).await;
    let send = async |incident: &Value, body: &str| {
        let path = format!("{INCIDENTS}/{}/notes", id_of(incident));
        let request = app.request(Method::POST, &path, Some(&token));
        let request = request
            .header(IDEMPOTENCY_KEY, "note-1")
            .json(&json!({"body": body}));
        request.send().await.unwrap()
    };
    let before = table_counts(app.pool()).await;

    let first = send(&incident, "Restarted the pods").await;
    assert_eq!(header(&first, IDEMPOTENT_REPLAYED), None);
    let first = expect_json(first, StatusCode::CREATED).await;
    let second = send(&incident, "Restarted the pods").await;
    assert_eq!(
        header(&second, IDEMPOTENT_REPLAYED).as_deref(),
        Some("true")
    );
    assert_eq!(expect_json(second, StatusCode::CREATED).await, first);
    let after = table_counts(app.pool()).await;
    assert_eq!(
        count_of(&after, "incident_events"),
        count_of(&before, "incident_events") + 1
    );

    let unchanged = snapshot(app.pool()).await;
    for (target, body) in [
        (&incident, "Something else"),
        (&other, "Restarted the pods"),
    ] {
        let response = send(target, body).await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = expect_problem(response, status, "invalid_field").await;
        assert_eq!(problem["field"], "Idempotency-Key");
        assert_nothing_written(&unchanged, &snapshot(app.pool()).await, body);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// What a hostile request must get back.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A success; the body only has to be JSON.
    Success,
    /// A problem with this `code`.
    Problem(&'static str),
    /// An `invalid_field` problem naming this field.
    Field(&'static str),
}

/// Sends hostile requests as one user and proves that each got the expected answer, never a 500,
/// and wrote nothing.
struct Hostile<'a> {
    app: &'a TestApp,
    token: &'a str,
    before: Snapshot,
}

impl Hostile<'_> {
    async fn check(
        &self,
        method: Method,
        path: &str,
        body: impl AsRef<[u8]>,
        headers: Headers<'_>,
        expected_status: u16,
        expected: Answer,
    ) {
        let body = body.as_ref().to_vec();
        let text: String = String::from_utf8_lossy(&body).chars().take(80).collect();
        let shown = format!("{method} {path} {text}");
        let mut request = self.app.request(method, path, Some(self.token));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        assert_ne!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{shown}"
        );
        let status = StatusCode::from_u16(expected_status).unwrap();
        match expected {
            Answer::Success => {
                expect_json(response, status).await;
            }
            Answer::Problem(code) => {
                expect_problem(response, status, code).await;
            }
            Answer::Field(field) => {
                let problem = expect_problem(response, status, "invalid_field").await;
                assert_eq!(problem["field"], field, "{shown}: {problem}");
            }
        }
        assert_nothing_written(&self.before, &snapshot(self.app.pool()).await, &shown);
    }
}

#[tokio::test]
async fn hostile_requests_get_a_problem_never_a_500_and_write_nothing() {
    use Answer::{Field, Problem, Success};
    use Method as M;
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let id = id_of(&incident);
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let ack = format!("{INCIDENTS}/{id}/acknowledge");
    let notes = format!("{INCIDENTS}/{id}/notes");
    let alerts = format!("{INCIDENTS}/{id}/alerts");
    let resolve = format!("{INCIDENTS}/{id}/resolve");
    let explode = format!("{INCIDENTS}/{id}/explode");
    let incident_path = format!("{INCIDENTS}/{id}");
    let missing = format!("{INCIDENTS}/{}/acknowledge", Uuid::now_v7());
    let drop_table = "%27%3B%20DROP%20TABLE%20services%3B%20--";
    let services_q = format!("/api/v1/services?q={drop_table}");
    let services_team = format!("/api/v1/services?team={drop_table}&tag={drop_table}");
    let cursor = format!("/api/v1/incidents?cursor={drop_table}");
    let summary =
        |text: String| format!(r#"{{"title": "t", "severity": "high", "summary": {text}}}"#);
    let over_64_kib = summary(format!(r#""{}""#, "a".repeat(70 * 1024)));
    let euro_60_kib = summary(format!(r#""{}""#, "€".repeat(20 * 1024)));
    let nested_in_field = summary(format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)));
    let nested_at_root = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let nested_objects = format!("{}{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let valid = r#"{"title": "t", "severity": "high"}"#;
    let zero_alert = r#"{"alert_id": "00000000-0000-0000-0000-000000000000"}"#;
    let text_plain: Headers = &[("content-type", "text/plain")];
    let form: Headers = &[("content-type", "application/x-www-form-urlencoded")];

    #[rustfmt::skip]
    let cases: &[(Method, &str, &str, Headers, u16, Answer)] = &[
        // Bodies that are not JSON, or not the JSON expected.
        (M::POST, INCIDENTS, r#"{"title":"#,                                   JSON, 400, Problem("malformed_request")),
        (M::POST, INCIDENTS, "",                                               JSON, 400, Problem("malformed_request")),
        (M::POST, INCIDENTS, "not json at all",                                JSON, 400, Problem("malformed_request")),
        (M::POST, INCIDENTS, "[]",                                             JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, r#""x""#,                                         JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, "null",                                           JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, "42",                                             JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, "{}",                                             JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, r#"{"title": 5, "severity": "high"}"#,            JSON, 422, Field("title")),
        (M::POST, INCIDENTS, r#"{"title": null, "severity": "high"}"#,         JSON, 422, Field("title")),
        (M::POST, INCIDENTS, r#"{"title": ["t"], "severity": "high"}"#,        JSON, 422, Field("title")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "catastrophic"}"#,  JSON, 422, Field("severity")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "high", "priority": 1}"#, JSON, 422, Field("priority")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "HIGH"}"#,          JSON, 422, Field("severity")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "high", "service_ids": ["nope"]}"#, JSON, 422, Field("service_ids[0]")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "high", "service_ids": "all"}"#,    JSON, 422, Field("service_ids")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "high", "commander_id": 7}"#,      JSON, 422, Field("commander_id")),
        (M::POST, INCIDENTS, r#"{"title": "t", "severity": "high", "summary": {"$ne": 1}}"#,  JSON, 422, Field("summary")),
        (M::POST, INCIDENTS, r#"{"severity": "high"}"#,                        JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, r#"{"title": "t"}"#,                              JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, r#"{"title": "a", "title": "b", "severity": "high"}"#, JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, &nested_in_field,                                 JSON, 422, Field("summary")),
        (M::POST, INCIDENTS, &nested_at_root,                                  JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, &nested_objects,                                  JSON, 422, Problem("invalid_field")),
        (M::POST, INCIDENTS, &euro_60_kib,                                     JSON, 422, Field("summary")),
        // Size and media type.
        (M::POST, INCIDENTS, &over_64_kib,                                     JSON,       413, Problem("payload_too_large")),
        (M::POST, INCIDENTS, valid,                                            NO_HEADERS, 415, Problem("unsupported_media_type")),
        (M::POST, INCIDENTS, valid,                                            text_plain, 415, Problem("unsupported_media_type")),
        (M::POST, INCIDENTS, valid,                                            form,       415, Problem("unsupported_media_type")),
        (M::POST, &notes,    r#"{"body": "hi"}"#,                              NO_HEADERS, 415, Problem("unsupported_media_type")),
        (M::POST, &alerts,   zero_alert,                                       NO_HEADERS, 415, Problem("unsupported_media_type")),
        // Bodies of notes, links and resolutions.
        (M::POST, &notes,    r#"{"body":"#,                                    JSON, 400, Problem("malformed_request")),
        (M::POST, &notes,    r#"{"body": 5}"#,                                 JSON, 422, Field("body")),
        (M::POST, &notes,    "[]",                                             JSON, 422, Problem("invalid_field")),
        (M::POST, &notes,    r#"{"body": "hi", "author": "ceo"}"#,             JSON, 422, Field("author")),
        (M::POST, &alerts,   r#"{"alert_id": "not-a-uuid"}"#,                  JSON, 422, Field("alert_id")),
        (M::POST, &alerts,   r#"{"alert_id": "'; DROP TABLE alerts; --"}"#,    JSON, 422, Field("alert_id")),
        (M::POST, &alerts,   "{}",                                             JSON, 422, Problem("invalid_field")),
        (M::POST, &resolve,  r#"{"note":"#,                                    JSON, 400, Problem("malformed_request")),
        (M::POST, &resolve,  r#"{"note": 5}"#,                                 JSON, 422, Field("note")),
        (M::POST, &resolve,  "[1, 2]",                                         JSON, 422, Problem("invalid_field")),
        (M::POST, &resolve,  r#"{"note": "fixed", "cause": "dns"}"#,           JSON, 422, Field("cause")),
        (M::POST, &resolve,  r#"{"note": ""}"#,                                JSON, 422, Problem("invalid_field")),
        // Paths and methods.
        (M::POST, "/api/v1/incidents/not-a-uuid/acknowledge",                  "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::POST, "/api/v1/incidents/not-a-uuid/resolve",                      "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::POST, "/api/v1/incidents/not-a-uuid/notes", r#"{"body": "hi"}"#,       JSON, 400, Problem("malformed_request")),
        (M::POST, "/api/v1/incidents/not-a-uuid/alerts", zero_alert,               JSON, 400, Problem("malformed_request")),
        (M::POST, "/api/v1/incidents/1%27%20OR%201%3D1/acknowledge",           "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::POST, &missing,       "",    NO_HEADERS, 404, Problem("not_found")),
        (M::POST, &explode,       "",    NO_HEADERS, 404, Problem("not_found")),
        (M::DELETE, &incident_path, "",  NO_HEADERS, 405, Problem("method_not_allowed")),
        (M::PUT,  INCIDENTS,      valid, JSON,       405, Problem("method_not_allowed")),
        (M::GET,  &ack,           "",    NO_HEADERS, 405, Problem("method_not_allowed")),
        // Query strings.
        (M::GET, &services_q,                                          "", NO_HEADERS, 200, Success),
        (M::GET, &services_team,                                       "", NO_HEADERS, 200, Success),
        (M::GET, "/api/v1/incidents?service_id=not-a-uuid",            "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/alerts?service_id=not-a-uuid",               "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/incidents?since=yesterday",                  "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/incidents?until=2024-13-45T99:00:00Z",       "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/incidents?status=open%27%20OR%20%271%27%3D%271", "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/incidents?limit=1000000",                    "", NO_HEADERS, 422, Field("limit")),
        (M::GET, "/api/v1/incidents?limit=0",                          "", NO_HEADERS, 422, Field("limit")),
        (M::GET, "/api/v1/incidents?limit=99999999999999999999",       "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, "/api/v1/incidents?limit=-1",                         "", NO_HEADERS, 400, Problem("malformed_request")),
        (M::GET, &cursor,                                              "", NO_HEADERS, 422, Field("cursor")),
        (M::GET, "/api/v1/incidents?drop=table",                       "", NO_HEADERS, 400, Problem("malformed_request")),
    ];
    for (method, path, body, headers, status, expected) in cases {
        hostile
            .check(method.clone(), path, body, headers, *status, *expected)
            .await;
    }
    let not_utf8: &[u8] = b"{\"title\": \"\xff\xfe\", \"severity\": \"high\"}";
    let malformed = Problem("malformed_request");
    hostile
        .check(M::POST, INCIDENTS, not_utf8, JSON, 400, malformed)
        .await;

    let counts = table_counts(app.pool()).await;
    assert!(
        count_of(&counts, "services") > 0,
        "the services table survived: {counts:?}"
    );
}

/// Every JSON value that is not an object, including an array holding the fields in order (which
/// serde alone would read as the struct), is refused as the body of every write operation that
/// the document lists with a JSON body, and writes nothing.
#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_with_422_by_every_write_and_writes_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let id = id_of(&incident).to_owned();
    let alert = insert_firing_alert(app.pool(), "acme", "cart-service", "unlinked").await;
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };

    // The write operations as the document lists them, so a new one cannot be forgotten here.
    let document: Value = serde_json::to_value(demo_backend::http::openapi_document()).unwrap();
    let mut writes: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, item)| item["post"]["requestBody"]["content"]["application/json"].is_object())
        .map(|(path, _)| path.replace("{incident_id}", &id))
        .collect();
    writes.sort();
    let expected = ["", "/acknowledge", "/alerts", "/notes", "/resolve"].map(|action| {
        if action.is_empty() {
            INCIDENTS.to_owned()
        } else {
            format!("{INCIDENTS}/{id}{action}")
        }
    });
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(writes, expected, "the write operations with a JSON body");

    let positional = |path: &str| match path.rsplit('/').next() {
        Some("incidents") => json!(["t", "high"]).to_string(),
        Some("notes") => json!(["a note"]).to_string(),
        Some("alerts") => json!([alert]).to_string(),
        Some("resolve") => json!(["fixed"]).to_string(),
        _ => "[]".to_owned(),
    };
    for path in &writes {
        let wrong_types = [
            "[]".to_owned(),
            positional(path),
            r#""a string""#.to_owned(),
            "42".to_owned(),
            "-1.5e3".to_owned(),
            "true".to_owned(),
            "null".to_owned(),
            " \n null \t".to_owned(),
        ];
        for body in &wrong_types {
            let shown = format!("POST {path} {body}");
            let request = app.request(Method::POST, path, Some(&token));
            let request = request
                .header("content-type", "application/json")
                .body(body.clone());
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let problem =
                expect_problem(request.send().await.unwrap(), status, "invalid_field").await;
            assert_eq!(problem["field"], "body", "{shown}: {problem}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains("expected a JSON object"),
                "{shown}: {detail}"
            );
            assert_nothing_written(&hostile.before, &snapshot(app.pool()).await, &shown);
        }
    }

    // The same requests with object bodies do write: the refusals above were about the type.
    let acknowledge = format!("{INCIDENTS}/{id}/acknowledge");
    hostile
        .check(
            Method::POST,
            &acknowledge,
            r#"{"note": "x"}"#,
            JSON,
            422,
            Answer::Field("note"),
        )
        .await;
    let response = app.post(&acknowledge, &token, &json!({})).await;
    assert_eq!(
        expect_json(response, StatusCode::OK).await["status"],
        "acknowledged"
    );
}

#[tokio::test]
async fn sixty_kib_bodies_of_unicode_within_the_limits_are_stored_literally() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let escaped_fire = "\\ud83d\\udd25".repeat(5 * 1024);
    let escaped = format!(r#"{{"title": "t", "severity": "low", "summary": "{escaped_fire}"}}"#);
    let raw_summary = format!("{}{}", "🔥".repeat(8_000), "€".repeat(2_000));
    let raw = json!({"title": "Ünïcödé 🔥 标题", "severity": "low", "summary": raw_summary});

    #[rustfmt::skip]
    let cases: &[(String, &str, String)] = &[
        // body, title stored, summary stored
        (escaped,         "t",              "🔥".repeat(5 * 1024)),
        (raw.to_string(), "Ünïcödé 🔥 标题", raw_summary.clone()),
    ];
    for (body, title, summary) in cases {
        assert!(body.len() > 36 * 1024, "{} bytes", body.len());
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        let request = request
            .header("content-type", "application/json")
            .body(body.clone());
        let incident = expect_json(request.send().await.unwrap(), StatusCode::CREATED).await;
        assert_eq!(incident["title"], *title);
        assert_eq!(incident["summary"], summary.as_str());
        let stored: String = sqlx::query_scalar("SELECT summary FROM incidents WHERE id = $1")
            .bind(id_of(&incident).parse::<Uuid>().unwrap())
            .fetch_one(app.pool())
            .await
            .unwrap();
        assert_eq!(&stored, summary);
    }
}

#[tokio::test]
async fn a_blank_resolve_note_is_refused_with_422_naming_the_note_field() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let resolve = format!("{INCIDENTS}/{}/resolve", id_of(&incident));

    for note in [r#"{"note": ""}"#, r#"{"note": "  \n "}"#] {
        hostile
            .check(
                Method::POST,
                &resolve,
                note,
                JSON,
                422,
                Answer::Field("note"),
            )
            .await;
    }
}

#[tokio::test]
async fn an_oversized_resolve_body_gets_a_413_problem_and_writes_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let resolve = format!("{INCIDENTS}/{}/resolve", id_of(&incident));
    let oversized = format!(r#"{{"note": "{}"}}"#, "a".repeat(70 * 1024));

    let too_large = Answer::Problem("payload_too_large");
    hostile
        .check(Method::POST, &resolve, &oversized, JSON, 413, too_large)
        .await;
}

#[tokio::test]
async fn nul_characters_in_text_fields_are_refused_with_422_and_write_nothing() {
    use Answer::Field;
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let id = id_of(&incident);
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let notes = format!("{INCIDENTS}/{id}/notes");
    let resolve = format!("{INCIDENTS}/{id}/resolve");

    #[rustfmt::skip]
    let cases: &[(&str, &str, Answer)] = &[
        (INCIDENTS, r#"{"title": "nul\u0000byte", "severity": "high"}"#,             Field("title")),
        (INCIDENTS, r#"{"title": "\u0000", "severity": "high"}"#,                    Field("title")),
        (INCIDENTS, r#"{"title": "t", "severity": "high", "summary": "a\u0000b"}"#,  Field("summary")),
        (&notes,    r#"{"body": "a\u0000b"}"#,                                       Field("body")),
        (&resolve,  r#"{"note": "a\u0000b"}"#,                                       Field("note")),
    ];
    for &(path, body, expected) in cases {
        hostile
            .check(Method::POST, path, body, JSON, 422, expected)
            .await;
    }
}

#[tokio::test]
async fn a_resolve_body_not_sent_as_json_is_refused_with_415_and_writes_nothing() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let resolve = format!("{INCIDENTS}/{}/resolve", id_of(&incident));
    let unsupported = Answer::Problem("unsupported_media_type");
    let text_plain: Headers = &[("content-type", "text/plain")];

    for headers in [NO_HEADERS, text_plain] {
        let body = r#"{"note": "sent as text"}"#;
        hostile
            .check(Method::POST, &resolve, body, headers, 415, unsupported)
            .await;
    }
}

#[tokio::test]
async fn a_missing_required_field_is_named_in_the_problem() {
    use Answer::Field;
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);
    let incident = open_incident(&app, &token, json!({"title": "Target", "severity": "low"})).await;
    let hostile = Hostile {
        app: &app,
        token: &token,
        before: snapshot(app.pool()).await,
    };
    let notes = format!("{INCIDENTS}/{}/notes", id_of(&incident));
    let alerts = format!("{INCIDENTS}/{}/alerts", id_of(&incident));

    #[rustfmt::skip]
    let cases: &[(&str, &str, Answer)] = &[
        (INCIDENTS, r#"{"title": "t"}"#,        Field("severity")),
        (INCIDENTS, r#"{"severity": "high"}"#,  Field("title")),
        (&notes,    "{}",                       Field("body")),
        (&alerts,   "{}",                       Field("alert_id")),
    ];
    for &(path, body, expected) in cases {
        hostile
            .check(Method::POST, path, body, JSON, 422, expected)
            .await;
    }
}

#[tokio::test]
async fn the_detail_of_a_json_field_error_names_the_field_once() {
    let (app, seeded) = seeded_app().await;
    let token = seeded.token("acme", Role::Responder);

    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        (r#"{"title": 5, "severity": "high"}"#,               "title"),
        (r#"{"title": "t", "severity": "catastrophic"}"#,     "severity"),
        (r#"{"title": "t", "severity": "high", "extra": 1}"#, "extra"),
    ];
    for &(body, field) in cases {
        let request = app.request(Method::POST, INCIDENTS, Some(&token));
        let request = request
            .header("content-type", "application/json")
            .body(body);
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = expect_problem(request.send().await.unwrap(), status, "invalid_field").await;
        assert_eq!(problem["field"], field, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.starts_with(&format!("{field}: {field}: ")),
            "{detail}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn acme_gets_404_on_every_write_endpoint_for_globex_incidents_and_globex_is_unchanged() {
    let (app, seeded) = seeded_app().await;
    let acme = seeded.token("acme", Role::Admin);
    let globex = seeded.token("globex", Role::Responder);
    let globex_alert = insert_firing_alert(app.pool(), "globex", "shipment-tracker", "lag").await;
    let acme_alert = insert_firing_alert(app.pool(), "acme", "checkout-api", "errors").await;
    let open_body =
        json!({"title": "Tracking lag", "severity": "high", "alert_ids": [globex_alert]});
    let open = open_incident(&app, &globex, open_body).await;
    let resolved = open_incident(&app, &globex, json!({"title": "Old", "severity": "low"})).await;
    resolve(&app, &globex, id_of(&resolved)).await;
    let globex_before = organization_rows(app.pool(), "globex").await;
    let before = snapshot(app.pool()).await;

    for incident in [id_of(&open), id_of(&resolved)] {
        let ack = format!("{INCIDENTS}/{incident}/acknowledge");
        let resolve = format!("{INCIDENTS}/{incident}/resolve");
        let notes = format!("{INCIDENTS}/{incident}/notes");
        let alerts = format!("{INCIDENTS}/{incident}/alerts");
        #[rustfmt::skip]
        let cases: &[(&str, Option<Value>, Option<&str>)] = &[
            (&ack,     None,                                   None),
            (&resolve, None,                                   None),
            (&resolve, Some(json!({"note": "done"})),          None),
            (&notes,   Some(json!({"body": "hi from acme"})),  None),
            (&notes,   Some(json!({"body": "hi again"})),      Some("acme-key")),
            (&alerts,  Some(json!({"alert_id": acme_alert})),  None),
            (&alerts,  Some(json!({"alert_id": globex_alert})), None),
        ];
        for (path, body, key) in cases {
            let mut request = app.request(Method::POST, path, Some(&acme));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header(IDEMPOTENCY_KEY, *key);
            }
            let response = request.send().await.unwrap();
            expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
            assert_nothing_written(&before, &snapshot(app.pool()).await, path);
            let globex_after = organization_rows(app.pool(), "globex").await;
            assert!(
                globex_after == globex_before,
                "{path} {body:?} changed globex's data"
            );
        }
    }

    let mut details = Vec::new();
    for incident in [Uuid::now_v7().to_string(), id_of(&open).to_owned()] {
        let path = format!("{INCIDENTS}/{incident}/acknowledge");
        let response = app.post(&path, &acme, &json!({})).await;
        let problem = expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        details.push(
            problem["detail"]
                .as_str()
                .unwrap()
                .replace(&incident, "<id>"),
        );
    }
    assert_eq!(
        details[0], details[1],
        "a foreign incident reads like a missing one"
    );
}

#[tokio::test]
async fn acme_gets_404_creating_or_linking_with_globex_services_or_alerts_and_nothing_is_written() {
    let (app, seeded) = seeded_app().await;
    let acme = seeded.token("acme", Role::Responder);
    let globex_service = service_id(app.pool(), "globex", "route-planner").await;
    let globex_alert = insert_firing_alert(app.pool(), "globex", "route-planner", "stale").await;
    let mine = open_incident(&app, &acme, json!({"title": "Mine", "severity": "low"})).await;
    let link = format!("{INCIDENTS}/{}/alerts", id_of(&mine));
    let globex_before = organization_rows(app.pool(), "globex").await;
    let before = snapshot(app.pool()).await;

    #[rustfmt::skip]
    let cases: [(&str, Value); 3] = [
        (INCIDENTS, json!({"title": "t", "severity": "high", "service_ids": [globex_service]})),
        (INCIDENTS, json!({"title": "t", "severity": "high", "alert_ids": [globex_alert]})),
        (&link,     json!({"alert_id": globex_alert})),
    ];
    for (path, body) in cases {
        let response = app.post(path, &acme, &body).await;
        expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        assert_nothing_written(&before, &snapshot(app.pool()).await, &body.to_string());
        let globex_after = organization_rows(app.pool(), "globex").await;
        assert!(
            globex_after == globex_before,
            "{body} changed globex's data"
        );
    }
    assert_eq!(alert_incident(app.pool(), globex_alert).await, None);
}

#[tokio::test]
async fn acme_gets_404_naming_a_globex_or_unknown_user_as_commander_and_nothing_is_written() {
    let (app, seeded) = seeded_app().await;
    let acme = seeded.token("acme", Role::Responder);
    let globex_user =
        me(&app, &seeded.token("globex", Role::Responder)).await["user"]["id"].clone();
    let before = snapshot(app.pool()).await;

    for commander in [globex_user, json!(Uuid::now_v7())] {
        let body = json!({"title": "t", "severity": "high", "commander_id": commander});
        let response = app.post(INCIDENTS, &acme, &body).await;
        expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
        assert_nothing_written(&before, &snapshot(app.pool()).await, &body.to_string());
    }
}

#[tokio::test]
async fn a_globex_commander_is_refused_exactly_like_an_unknown_one_and_nothing_is_written() {
    let (app, seeded) = seeded_app().await;
    let acme = seeded.token("acme", Role::Responder);
    let globex_user =
        me(&app, &seeded.token("globex", Role::Responder)).await["user"]["id"].clone();
    let unknown_user = json!(Uuid::now_v7());
    let before = snapshot(app.pool()).await;

    let mut answers = Vec::new();
    for commander in [&globex_user, &unknown_user] {
        let body = json!({"title": "t", "severity": "high", "commander_id": commander});
        let response = app.post(INCIDENTS, &acme, &body).await;
        let status = response.status();
        assert!(
            status.is_client_error() && status != StatusCode::FORBIDDEN,
            "{status}"
        );
        let problem = expect_json(response, status).await;
        let detail = problem["detail"].as_str().unwrap();
        let detail = detail.replace(commander.as_str().unwrap(), "<id>");
        answers.push((
            status,
            problem["code"].clone(),
            problem["field"].clone(),
            detail,
        ));
        assert_nothing_written(&before, &snapshot(app.pool()).await, &body.to_string());
    }
    assert_eq!(
        answers[0], answers[1],
        "a foreign commander must read like an unknown one"
    );
}

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn read_only_tokens_get_403_anonymous_callers_401_and_a_responder_can_use_every_write() {
    let (app, seeded) = seeded_app().await;
    let responder = seeded.token("acme", Role::Responder);
    let viewer = seeded.token("acme", Role::Viewer);
    let email = me(&app, &responder).await["user"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let read_only_responder = token_for(app.pool(), "acme", &email, &[Scope::Read]).await;
    let alert = insert_firing_alert(app.pool(), "acme", "pricing-service", "stale").await;
    let incident = open_incident(&app, &responder, json!({"title": "T", "severity": "low"})).await;
    let id = id_of(&incident);
    let (notes, alerts) = (
        format!("{INCIDENTS}/{id}/notes"),
        format!("{INCIDENTS}/{id}/alerts"),
    );
    let (ack, resolve) = (
        format!("{INCIDENTS}/{id}/acknowledge"),
        format!("{INCIDENTS}/{id}/resolve"),
    );

    // In this order, each is allowed for a responder.
    #[rustfmt::skip]
    let endpoints: &[(&str, Value, StatusCode)] = &[
        (INCIDENTS, json!({"title": "t", "severity": "high"}), StatusCode::CREATED),
        (&notes,    json!({"body": "a note"}),                 StatusCode::CREATED),
        (&alerts,   json!({"alert_id": alert}),                StatusCode::OK),
        (&ack,      json!({}),                                 StatusCode::OK),
        (&resolve,  json!({"note": "fixed"}),                  StatusCode::OK),
    ];
    let before = snapshot(app.pool()).await;

    #[rustfmt::skip]
    let refused_callers: &[(Option<&str>, StatusCode, &str)] = &[
        (Some(viewer.as_str()),      StatusCode::FORBIDDEN,    "forbidden"),
        (Some(&*read_only_responder), StatusCode::FORBIDDEN,   "forbidden"),
        (None,                       StatusCode::UNAUTHORIZED, "unauthorized"),
        (Some("dmo_not-a-token"),    StatusCode::UNAUTHORIZED, "unauthorized"),
    ];
    for &(token, status, code) in refused_callers {
        for (path, body, _) in endpoints {
            let request = app
                .request(Method::POST, path, token)
                .header(IDEMPOTENCY_KEY, "k");
            let response = request.json(body).send().await.unwrap();
            expect_problem(response, status, code).await;
            assert_nothing_written(&before, &snapshot(app.pool()).await, path);
        }
    }

    for (path, body, status) in endpoints {
        expect_json(app.post(path, &responder, body).await, *status).await;
    }
    let after = app.get_json(&format!("{INCIDENTS}/{id}"), &responder).await;
    assert_eq!(after["status"], "resolved");
    let expected = ["opened", "note", "alert_linked", "acknowledged", "resolved"];
    assert_eq!(kinds(&after["timeline"]), expected);
}

// ---------------------------------------------------------------------------------------------
// Rate limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_fourth_immediate_request_of_a_token_is_429_with_retry_after_others_unaffected() {
    let (database, seeded) = seeded_database().await;
    let limit = RateLimit {
        per_minute: 60,
        burst: 3,
    };
    let app = TestApp::spawn_with_rate_limit(database, limit).await;
    let email: String = sqlx::query_scalar(
        "SELECT u.email FROM users u JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = 'acme' AND u.role = 'responder' ORDER BY u.email LIMIT 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    let scopes = [Scope::Read, Scope::Write];
    let limited = token_for(app.pool(), "acme", &email, &scopes).await;
    let same_user_other_token = token_for(app.pool(), "acme", &email, &scopes).await;
    let before = table_counts(app.pool()).await;

    for attempt in 1..=3 {
        let body = json!({"title": format!("burst {attempt}"), "severity": "low"});
        expect_json(
            app.post(INCIDENTS, &limited, &body).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let body = json!({"title": "burst 4", "severity": "low"});
    let response = app.post(INCIDENTS, &limited, &body).await;
    let retry_after = header(&response, "retry-after");
    expect_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let retry_after = retry_after.expect("a Retry-After header");
    let seconds: u64 = retry_after
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!((1..=60).contains(&seconds), "Retry-After: {seconds}");

    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents WHERE title = 'burst 4'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(refused, 0, "a rate-limited request writes nothing");
    let after = table_counts(app.pool()).await;
    assert_eq!(
        count_of(&after, "incidents"),
        count_of(&before, "incidents") + 3
    );

    let others = [
        same_user_other_token,
        seeded.token("acme", Role::Admin),
        seeded.token("globex", Role::Responder),
    ];
    for other in others {
        let body = json!({"title": "another token", "severity": "low"});
        expect_json(
            app.post(INCIDENTS, &other, &body).await,
            StatusCode::CREATED,
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn seeded_app() -> (TestApp, &'static Seeded) {
    let (database, seeded) = seeded_database().await;
    (TestApp::spawn(database).await, seeded)
}

/// POSTs a new incident, expecting 201, and returns it.
async fn open_incident(app: &TestApp, token: &str, body: Value) -> Value {
    expect_json(app.post(INCIDENTS, token, &body).await, StatusCode::CREATED).await
}

/// Resolves an incident without a body, expecting 200.
async fn resolve(app: &TestApp, token: &str, id: &str) {
    let path = format!("{INCIDENTS}/{id}/resolve");
    let response = app
        .request(Method::POST, &path, Some(token))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
}

/// Asks for a transition and checks the answer, the row afterwards, and that exactly one timeline
/// event was written when it succeeded (none when it was refused).
async fn check_transition(
    app: &TestApp,
    token: &str,
    id: &str,
    action: &str,
    body: Option<&str>,
    expected: u16,
    status_after: &str,
) {
    let context = format!("{action} {body:?} -> {expected}");
    let events_before = event_count(app.pool(), id).await;
    let (_, _, acknowledged_before, resolved_before) = incident_row(app.pool(), id).await;
    let path = format!("{INCIDENTS}/{id}/{action}");
    let mut request = app.request(Method::POST, &path, Some(token));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let (status, _, acknowledged_at, resolved_at) = incident_row(app.pool(), id).await;
    let events_after = event_count(app.pool(), id).await;
    if expected == 409 {
        expect_problem(response, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(
            events_after, events_before,
            "{context}: a refused transition writes no event"
        );
        assert_eq!(acknowledged_at, acknowledged_before, "{context}");
        assert_eq!(resolved_at, resolved_before, "{context}");
    } else {
        let incident = expect_json(response, StatusCode::from_u16(expected).unwrap()).await;
        assert_eq!(incident["status"], status_after, "{context}");
        assert_eq!(
            events_after,
            events_before + 1,
            "{context}: one event per transition"
        );
        let last = incident["timeline"].as_array().unwrap().last().unwrap();
        let kind = if action == "acknowledge" {
            "acknowledged"
        } else {
            "resolved"
        };
        assert_eq!(last["kind"], kind, "{context}");
        assert_eq!(
            timestamp(&incident["acknowledged_at"]),
            acknowledged_at,
            "{context}"
        );
        assert_eq!(
            timestamp(&incident["resolved_at"]),
            resolved_at,
            "{context}"
        );
    }
    assert_eq!(status, status_after, "{context}");
    assert_eq!(
        resolved_at.is_some(),
        status_after == "resolved",
        "{context}"
    );
    if status_after == "acknowledged" {
        assert!(acknowledged_at.is_some(), "{context}");
    }
}

fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|text| text.parse().unwrap())
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.get_json("/api/v1/me", token).await
}

fn id_of(value: &Value) -> &str {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
}

fn ids(items: &Value) -> Vec<&str> {
    items.as_array().unwrap().iter().map(id_of).collect()
}

fn names(services: &Value) -> Vec<&str> {
    let services = services.as_array().unwrap();
    services
        .iter()
        .map(|service| service["name"].as_str().unwrap())
        .collect()
}

fn kinds(timeline: &Value) -> Vec<&str> {
    let timeline = timeline.as_array().unwrap();
    timeline
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect()
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn count_of(counts: &[(String, i64)], table: &str) -> i64 {
    counts
        .iter()
        .find(|(name, _)| name == table)
        .map(|(_, count)| *count)
        .unwrap()
}

async fn service_id(pool: &PgPool, slug: &str, name: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT s.id FROM services s JOIN organizations o ON o.id = s.organization_id
          WHERE o.slug = $1 AND s.name = $2",
    )
    .bind(slug)
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("the seed has no service {name} in {slug}"))
}

/// Adds a monitor and a firing alert, linked to no incident, to the service `service` of `slug`.
async fn insert_firing_alert(pool: &PgPool, slug: &str, service: &str, summary: &str) -> Uuid {
    let service_id = service_id(pool, slug, service).await;
    let alert_id = Uuid::now_v7();
    sqlx::query(
        "WITH monitor AS (
             INSERT INTO monitors (id, organization_id, service_id, name, metric, comparison,
                                   threshold, for_minutes, severity)
             SELECT $1, organization_id, id, 'test monitor', 'error_rate', 'above', 0.05, 5, 'high'
               FROM services WHERE id = $2
             RETURNING id, organization_id, service_id)
         INSERT INTO alerts (id, organization_id, monitor_id, service_id, state, severity, summary,
                             started_at)
         SELECT $3, organization_id, id, service_id, 'firing', 'high', $4, now() FROM monitor",
    )
    .bind(Uuid::now_v7())
    .bind(service_id)
    .bind(alert_id)
    .bind(summary)
    .execute(pool)
    .await
    .unwrap();
    alert_id
}

async fn alert_incident(pool: &PgPool, alert: Uuid) -> Option<Uuid> {
    sqlx::query_scalar("SELECT incident_id FROM alerts WHERE id = $1")
        .bind(alert)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn highest_incident_number(pool: &PgPool, slug: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(i.number), 0)::bigint FROM incidents i
           JOIN organizations o ON o.id = i.organization_id WHERE o.slug = $1",
    )
    .bind(slug)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The incident's row as stored: status, opened_at, acknowledged_at, resolved_at.
async fn incident_row(
    pool: &PgPool,
    id: &str,
) -> (
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
) {
    let query = "SELECT status::text, opened_at, acknowledged_at, resolved_at
                   FROM incidents WHERE id = $1";
    sqlx::query_as(query)
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn stored_title(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT title FROM incidents WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn event_count(pool: &PgPool, incident: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM incident_events WHERE incident_id = $1")
        .bind(incident.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Row counts of every table plus the full content of the tables that writes change, so that a
/// refused request is proven to have written nothing, not even an update.
#[derive(Debug)]
struct Snapshot {
    counts: Vec<(String, i64)>,
    rows: Value,
}

async fn snapshot(pool: &PgPool) -> Snapshot {
    Snapshot {
        counts: table_counts(pool).await,
        rows: rows_of(pool, None).await,
    }
}

fn assert_nothing_written(before: &Snapshot, after: &Snapshot, context: &str) {
    assert_eq!(before.counts, after.counts, "{context}: row counts changed");
    for (table, rows) in before.rows.as_object().unwrap() {
        assert!(
            rows == &after.rows[table],
            "{context}: table {table} changed"
        );
    }
}

/// The content of one organisation's writable tables.
async fn organization_rows(pool: &PgPool, slug: &str) -> Value {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_one(pool)
        .await
        .unwrap();
    rows_of(pool, Some(id)).await
}

/// The writable tables as JSON, of every organisation or only of `organization`.
async fn rows_of(pool: &PgPool, organization: Option<Uuid>) -> Value {
    sqlx::query_scalar(
        "SELECT json_build_object(
            'organizations', (SELECT json_agg(t ORDER BY t.id) FROM organizations t
                               WHERE $1::uuid IS NULL OR t.id = $1),
            'incidents', (SELECT json_agg(t ORDER BY t.id) FROM incidents t
                           WHERE $1::uuid IS NULL OR t.organization_id = $1),
            'incident_services', (SELECT json_agg(t ORDER BY t.incident_id, t.service_id)
                                    FROM incident_services t
                                   WHERE $1::uuid IS NULL OR t.organization_id = $1),
            'incident_events', (SELECT json_agg(t ORDER BY t.id) FROM incident_events t
                                 WHERE $1::uuid IS NULL OR t.organization_id = $1),
            'alerts', (SELECT json_agg(t ORDER BY t.id) FROM alerts t
                        WHERE $1::uuid IS NULL OR t.organization_id = $1),
            'monitors', (SELECT json_agg(t ORDER BY t.id) FROM monitors t
                          WHERE $1::uuid IS NULL OR t.organization_id = $1),
            'idempotency_keys', (SELECT json_agg(t ORDER BY t.user_id, t.key) FROM idempotency_keys t
                                  WHERE $1::uuid IS NULL OR t.organization_id = $1))",
    )
    .bind(organization)
    .fetch_one(pool)
    .await
    .unwrap()
}
