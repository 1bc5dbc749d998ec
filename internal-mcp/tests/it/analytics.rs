//! The analytics tools against the seed's known stories: each organisation's bad deploy, the
//! error-rate spike it caused (the anomaly window), the error budget it burned, and the noisy
//! monitor the seed planted.

use chrono::Duration;
use internal_mcp::config::Endpoint;
use serde_json::{Value, json};

use crate::support::{TestApp, call, seed_options, story, success, time};

/// Asserts two times are at most a minute apart.
fn assert_close(actual: &Value, expected: chrono::DateTime<chrono::Utc>, what: &str) {
    let actual = time(actual);
    assert!(
        (actual - expected).num_seconds().abs() <= 60,
        "{what}: {actual} is not within a minute of {expected}"
    );
}

#[tokio::test]
async fn the_anomaly_window_of_each_story_is_found_where_it_is() {
    let app = TestApp::spawn().await;
    for (slug, handle) in [("acme", "sam"), ("globex", "ana")] {
        let story = story(slug);
        let client = app.client(Endpoint::Metrics, slug, handle).await;
        let report = success(
            &call(
                &client,
                "detect_anomalies",
                json!({
                    "service": story.service,
                    "metric": "error_rate",
                    "since": (story.deployed_at - Duration::hours(3)).to_rfc3339(),
                    "until": (story.spike_end + Duration::hours(2)).to_rfc3339(),
                }),
            )
            .await,
        );
        let window = &report["windows"][0];
        assert_eq!(window["metric"], "error_rate", "{report}");
        assert_eq!(window["direction"], "above");
        assert_close(
            &window["start"],
            story.spike_start,
            "the window starts with the spike",
        );
        assert_close(
            &window["end"],
            story.spike_end,
            "the window ends when the rollback finished",
        );
        assert!(window["peak_z"].as_f64().unwrap() > 20.0, "{window}");
        assert!(window["peak_value"].as_f64().unwrap() > 0.1, "{window}");

        // With every metric over the default day, the story still stands out.
        let day = success(
            &call(
                &client,
                "detect_anomalies",
                json!({"service": story.service}),
            )
            .await,
        );
        let windows = day["windows"].as_array().unwrap();
        assert!(
            windows.iter().any(|window| window["metric"] == "error_rate"
                && time(&window["start"]) == story.spike_start),
            "{day}"
        );
        assert!(
            windows
                .iter()
                .any(|window| window["metric"] == "latency_p95_ms"
                    && time(&window["start"]) == story.spike_start),
            "the latency rose with the errors: {day}"
        );
    }
}

#[tokio::test]
async fn correlation_puts_each_storys_bad_deploy_first() {
    let app = TestApp::spawn().await;
    for (slug, handle) in [("acme", "sam"), ("globex", "ana")] {
        let story = story(slug);
        let organization = app.organization_id(slug).await;
        let number: i32 = sqlx::query_scalar(
            "SELECT number FROM incidents WHERE organization_id = $1 AND title = $2",
        )
        .bind(organization)
        .bind(story.incident_title)
        .fetch_one(app.pool())
        .await
        .unwrap();
        let client = app.client(Endpoint::Incidents, slug, handle).await;
        let report = success(
            &call(
                &client,
                "correlate_incident",
                json!({"incident": format!("INC-{number}")}),
            )
            .await,
        );
        let top = &report["suspects"][0];
        assert_eq!(top["service"], story.service, "{report}");
        assert_eq!(top["version"], story.bad_version);
        assert_eq!(top["status"], "rolled_back");
        assert_close(&top["started_at"], story.deployed_at, "the bad deploy");
        assert!(top["error_rate_z"].as_f64().unwrap() > 20.0, "{top}");
        assert_eq!(top["on_affected_service"], true);
        for other in report["suspects"].as_array().unwrap().iter().skip(1) {
            assert!(other["score"].as_f64() < top["score"].as_f64(), "{other}");
        }
        let spike = report["metric_changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|change| change["metric"] == "error_rate")
            .unwrap_or_else(|| panic!("no error_rate change: {report}"));
        assert_close(
            &spike["start"],
            story.spike_start,
            "the change starts with the spike",
        );
        assert!(
            top["minutes_before_first_change"].as_f64().unwrap() <= 5.0,
            "{top}"
        );
        assert!(
            report["conclusion"]
                .as_str()
                .unwrap()
                .contains(story.bad_version),
            "{report}"
        );

        // The same incident by number and by id.
        let by_number = success(
            &call(
                &client,
                "correlate_incident",
                json!({"incident": number.to_string()}),
            )
            .await,
        );
        let id = report["incident"]["id"].clone();
        let by_id = success(&call(&client, "correlate_incident", json!({"incident": id})).await);
        assert_eq!(
            by_number["suspects"][0]["deployment_id"],
            top["deployment_id"]
        );
        assert_eq!(by_id["suspects"][0]["deployment_id"], top["deployment_id"]);
    }
}

#[tokio::test]
async fn the_error_budget_burn_shows_the_spike() {
    let app = TestApp::spawn().await;
    let story = story("acme");
    let client = app.client(Endpoint::Metrics, "acme", "sam").await;
    let burn = success(
        &call(
            &client,
            "slo_burn",
            json!({
                "service": story.service,
                "objective_percent": 99.5,
                "window_hours": 6,
                "until": (story.spike_end + Duration::hours(1)).to_rfc3339(),
            }),
        )
        .await,
    );
    assert!(
        burn["burn_rate"].as_f64().unwrap() > 2.0,
        "a 40-minute 18% error spike overspends six hours' budget: {burn}"
    );
    assert!(burn["budget_remaining_percent"].as_f64().unwrap() < 0.0);
    assert!(burn["assessment"].as_str().unwrap().contains("overspent"));
    let worst = time(&burn["worst_hours"][0]["hour"]);
    assert!(
        worst <= story.spike_end && worst + Duration::hours(1) > story.spike_start,
        "the worst hour {worst} overlaps the spike: {burn}"
    );
    assert!(
        burn["worst_hours"][0]["burn_rate"].as_f64().unwrap() > 10.0,
        "{burn}"
    );

    // The six quiet hours before the deploy are within budget.
    let quiet = success(
        &call(
            &client,
            "slo_burn",
            json!({"service": story.service, "window_hours": 6, "until": story.deployed_at.to_rfc3339()}),
        )
        .await,
    );
    assert!(quiet["burn_rate"].as_f64().unwrap() < 1.0, "{quiet}");
    assert!(quiet["assessment"].as_str().unwrap().contains("within"));
}

#[tokio::test]
async fn the_planted_noisy_monitor_ranks_first() {
    let app = TestApp::spawn().await;
    let until = seed_options().until + Duration::minutes(1);
    let since = until - Duration::days(2);
    for (slug, handle, noisy) in [
        ("acme", "sam", "storefront-web traffic surge"),
        ("globex", "ana", "traffic surge"),
    ] {
        let client = app.client(Endpoint::Metrics, slug, handle).await;
        let report = success(
            &call(
                &client,
                "noisy_alert_rules",
                json!({"since": since.to_rfc3339(), "until": until.to_rfc3339(), "limit": 5}),
            )
            .await,
        );
        let rules = report["rules"].as_array().unwrap();
        assert!(
            rules[0]["monitor"].as_str().unwrap().ends_with(noisy),
            "{report}"
        );
        assert!(
            rules[0]["alerts"].as_i64() > rules[1]["alerts"].as_i64(),
            "{report}"
        );
        assert!(rules[0]["short_lived"].as_i64().unwrap() > 0, "{report}");
        assert!(rules.len() <= 5);
    }
}
