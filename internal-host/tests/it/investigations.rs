//! AgenticOps against real parts: PostgreSQL from the harness with demo-backend's seed, the real
//! internal-mcp over HTTP, and workers running the real loop. Incidents are opened through
//! demo-backend's domain layer; what reached the incident's timeline is checked with SQL as the
//! database's superuser (the host itself cannot read the product's tables).

use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use demo_backend::seed::{self, SeedOptions};
use internal_host::AppState;
use internal_host::investigations::{
    self, AgentIdentity, InvestigationConfig, SynthesisConfig, run_worker,
};
use serde_json::Value;
use sqlx::PgPool;
use test_harness::TestDatabase;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::scripted_model::{Reply, ScriptedModel};
use crate::support::{
    ProductApi, host_config, open_incident, seeded_database, seeded_with, spawn_internal_mcp,
};

/// How long a test waits for the workers before it gives up (a deadline, not a measurement).
const PATIENCE: Duration = Duration::from_secs(240);

/// The seed options of `support::seeded_database`.
fn fixed_seed_options() -> SeedOptions {
    SeedOptions {
        days: 1,
        ..SeedOptions::new(
            Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0)
                .single()
                .expect("a valid time"),
        )
    }
}

/// A seed whose data ends a little under six hours from now, so that acme's bad deploy landed
/// 20 minutes ago and its error spike is going on: an incident opened now has the deploy right
/// before it.
async fn live_seeded_database() -> (TestDatabase, SeedOptions) {
    let until = Utc::now() + TimeDelta::hours(6) - TimeDelta::minutes(20);
    let options = SeedOptions {
        days: 1,
        ..SeedOptions::new(until)
    };
    let database = seeded_with("internal-host-live-seeded", options).await;
    (database, options)
}

/// Moves the seed's incidents opened from 5 minutes ago on (the live seed runs some hours into
/// the future) a day back, so that a worker discovering from now sees only the incidents the
/// test opens.
async fn only_new_incidents_ahead(pool: &PgPool) {
    sqlx::query(
        "UPDATE incidents SET opened_at = opened_at - interval '2 days'
          WHERE opened_at > now() - interval '5 minutes'",
    )
    .execute(pool)
    .await
    .expect("the seed's recent incidents moved back");
}

/// acme's story (its bad deploy and spike) in the data `options` generate.
fn acme_story(options: &SeedOptions) -> seed::Story {
    seed::stories(options)
        .into_iter()
        .find(|story| story.organization_slug == "acme")
        .expect("acme's story")
}

/// Each organisation's service user, as an operator would configure them.
async fn agents(pool: &PgPool, slugs: &[&str]) -> Vec<AgentIdentity> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT u.organization_id, u.id FROM users u JOIN organizations o ON o.id = u.organization_id
          WHERE u.email LIKE $1 || '@%' AND o.slug = ANY ($2) ORDER BY o.slug",
    )
    .bind(seed::SERVICE_USER_HANDLE)
    .bind(slugs)
    .fetch_all(pool)
    .await
    .expect("the service users");
    assert_eq!(rows.len(), slugs.len(), "one service user per organisation");
    rows.into_iter()
        .map(|(organization_id, user_id)| AgentIdentity {
            organization_id,
            user_id,
        })
        .collect()
}

fn worker_config(agents: Vec<AgentIdentity>, name: &str) -> InvestigationConfig {
    let mut config = InvestigationConfig::new(agents);
    config.worker_id = format!("{name}-{}", Uuid::new_v4());
    config.poll_interval = Duration::from_millis(300);
    config.lease = Duration::from_secs(3);
    config.retry_backoff = Duration::from_millis(300);
    config
}

async fn spawn_worker(
    database: &TestDatabase,
    url: &str,
    config: InvestigationConfig,
) -> JoinHandle<()> {
    let state = AppState::connect(host_config(database, url))
        .await
        .expect("the host starts");
    tokio::spawn(async move {
        run_worker(&state, config, std::future::pending())
            .await
            .expect("the worker runs");
    })
}

/// Waits until `done` holds for the rows of `internal_host.investigations`, printing progress.
async fn wait_for(pool: &PgPool, what: &str, done: impl Fn(&[(String, i64)]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM internal_host.investigations GROUP BY status ORDER BY status",
        )
        .fetch_all(pool)
        .await
        .expect("the counts");
        if done(&counts) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_of(counts: &[(String, i64)], status: &str) -> i64 {
    counts
        .iter()
        .find(|(name, _)| name == status)
        .map_or(0, |(_, count)| *count)
}

fn settled(counts: &[(String, i64)], expected: i64) -> bool {
    let total: i64 = counts.iter().map(|(_, count)| count).sum();
    total == expected && count_of(counts, "queued") == 0 && count_of(counts, "running") == 0
}

#[derive(Debug, sqlx::FromRow)]
struct Investigation {
    id: Uuid,
    incident_id: Uuid,
    status: String,
    status_reason: Option<String>,
    attempts: i32,
    note_status: String,
    report: Option<Value>,
    error: Option<String>,
    mcp_calls: i32,
}

async fn stored_investigations(pool: &PgPool) -> Vec<Investigation> {
    sqlx::query_as(
        "SELECT id, incident_id, status, status_reason, attempts, note_status, report, error, mcp_calls
           FROM internal_host.investigations ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .expect("the investigations")
}

/// The service user's notes on an incident's timeline.
async fn agent_notes(pool: &PgPool, incident_id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT e.body FROM incident_events e JOIN users u ON u.id = e.author_id
          WHERE e.incident_id = $1 AND e.kind = 'note' AND u.email LIKE 'assistant@%'",
    )
    .bind(incident_id)
    .fetch_all(pool)
    .await
    .expect("the notes")
}

/// Every claim of the report cites steps recorded for this investigation.
async fn assert_claims_cite_recorded_steps(pool: &PgPool, investigation: &Investigation) {
    let report = investigation.report.as_ref().expect("a report");
    let steps: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM internal_host.investigation_steps WHERE investigation_id = $1",
    )
    .bind(investigation.id)
    .fetch_all(pool)
    .await
    .expect("the steps");
    let mut claims: Vec<&Value> = Vec::new();
    for section in ["what_is_going_on", "evidence", "ruled_out", "next_steps"] {
        claims.extend(report[section].as_array().expect("a list"));
    }
    if !report["suspected_cause"].is_null() {
        claims.push(&report["suspected_cause"]["claim"]);
    }
    assert!(!claims.is_empty(), "{report}");
    for claim in claims {
        let cites = claim["cites"].as_array().expect("citations");
        assert!(!cites.is_empty(), "{claim}");
        for cite in cites {
            assert!(
                steps.contains(&cite.as_i64().expect("a step id")),
                "{claim} cites an unknown step"
            );
        }
    }
}

#[tokio::test]
async fn an_incident_opened_now_gets_one_investigation_naming_the_bad_deploy_and_one_note() {
    let (database, options) = live_seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let worker = spawn_worker(
        &database,
        &url,
        worker_config(agents(pool, &["acme"]).await, "solo"),
    )
    .await;

    let story = acme_story(&options);
    // Opened through the REST API, as a person or a host outside the product would.
    let api = ProductApi::start(pool, "acme", "marcus").await;
    let opened = Instant::now();
    let incident_id = api
        .open_incident(story.service, "Checkout errors right now")
        .await;
    let deadline = Instant::now() + PATIENCE;
    let investigation = loop {
        let found = stored_investigations(pool)
            .await
            .into_iter()
            .find(|investigation| investigation.incident_id == incident_id);
        if let Some(found) =
            found.filter(|found| found.status == "completed" || found.status == "failed")
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no finished investigation for the incident"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = opened.elapsed();
    assert_eq!(investigation.status, "completed", "{investigation:?}");
    let report = investigation.report.as_ref().expect("a report");
    let cause = &report["suspected_cause"];
    assert_eq!(cause["service"], story.service, "{report}");
    assert_eq!(cause["version"], story.bad_version, "{report}");
    assert_eq!(cause["confidence"], "high", "{report}");
    let deployed_at: chrono::DateTime<Utc> =
        serde_json::from_value(cause["started_at"].clone()).expect("a time");
    assert!(
        (deployed_at - story.deployed_at).num_seconds().abs() <= 60,
        "{cause}"
    );
    let spike = report["anomaly_windows"]
        .as_array()
        .expect("windows")
        .iter()
        .find(|window| window["metric"] == "error_rate")
        .unwrap_or_else(|| panic!("no error_rate window: {report}"));
    let spike_start: chrono::DateTime<Utc> =
        serde_json::from_value(spike["start"].clone()).expect("a time");
    assert!(
        (spike_start - story.spike_start).num_seconds().abs() <= 60,
        "the anomaly window starts with the spike: {spike}"
    );
    assert_claims_cite_recorded_steps(pool, &investigation).await;

    // A few more polls see the incident again (the overlap) and change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notes = api.notes_by(incident_id, seed::SERVICE_USER_HANDLE).await;
    assert_eq!(
        notes.len(),
        1,
        "one note, read through the REST API: {notes:?}"
    );
    assert!(notes[0].contains(story.bad_version), "{}", notes[0]);
    assert!(notes[0].contains(&investigation.id.to_string()));
    let again: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_host.investigations WHERE incident_id = $1",
    )
    .bind(incident_id)
    .fetch_one(pool)
    .await
    .expect("a count");
    assert_eq!(again, 1);
    assert_eq!(investigation.note_status, "posted");

    // What a page reads, as the host's own role: the steps, no confirmation token anywhere, and
    // nothing for another organisation.
    let host = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts");
    let organization_id = agents(pool, &["acme"]).await[0].organization_id;
    let detail = investigations::investigation(host.database(), organization_id, incident_id)
        .await
        .expect("a read")
        .expect("the investigation");
    assert_eq!(detail.steps.len() as i32, investigation.mcp_calls);
    let names: Vec<&str> = detail.steps.iter().map(|step| step.name.as_str()).collect();
    assert!(
        names.ends_with(&["timeline_check", "annotate_plan", "annotate_confirm"]),
        "{names:?}"
    );
    for step in &detail.steps {
        let stored = format!("{} {:?}", step.arguments, step.result);
        assert!(
            !stored.contains("imc_"),
            "a confirmation token was stored: {stored}"
        );
    }
    let listed = investigations::list_investigations(host.database(), organization_id, 50)
        .await
        .expect("a list");
    assert!(
        listed
            .iter()
            .any(|summary| summary.incident_id == incident_id)
    );
    let elsewhere = investigations::investigation(host.database(), Uuid::new_v4(), incident_id)
        .await
        .expect("a read");
    assert!(elsewhere.is_none());
    println!("the note on the timeline:\n{}", notes[0]);
    println!(
        "figures: incident opened -> report posted in {} ms, {} MCP calls in the run",
        elapsed.as_millis(),
        investigation.mcp_calls
    );
    worker.abort();
}

#[tokio::test]
async fn two_racing_workers_investigate_every_seeded_incident_once_and_name_each_storys_bad_deploy()
{
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let options = fixed_seed_options();
    let agents = agents(pool, &["acme", "globex"]).await;
    let since = options.until - TimeDelta::days(2);
    let mut first = worker_config(agents.clone(), "first");
    first.discover_since = Some(since);
    let mut second = worker_config(agents, "second");
    second.discover_since = Some(since);
    let started = Instant::now();
    let one = spawn_worker(&database, &url, first).await;
    let two = spawn_worker(&database, &url, second).await;

    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
        .fetch_one(pool)
        .await
        .expect("a count");
    wait_for(pool, "every incident investigated", |counts| {
        settled(counts, incidents)
    })
    .await;
    let elapsed = started.elapsed();
    let all = stored_investigations(pool).await;
    assert_eq!(all.len() as i64, incidents);
    for investigation in &all {
        assert_eq!(investigation.status, "completed", "{investigation:?}");
        let notes = agent_notes(pool, investigation.incident_id).await;
        assert_eq!(
            notes.len(),
            1,
            "one note per incident: {investigation:?} {notes:?}"
        );
        assert_claims_cite_recorded_steps(pool, investigation).await;
    }
    for story in seed::stories(&options) {
        let incident_id: Uuid = sqlx::query_scalar(
            "SELECT i.id FROM incidents i JOIN organizations o ON o.id = i.organization_id
              WHERE o.slug = $1 AND i.title = $2",
        )
        .bind(story.organization_slug)
        .bind(story.incident_title)
        .fetch_one(pool)
        .await
        .expect("the story's incident");
        let investigation = all
            .iter()
            .find(|investigation| investigation.incident_id == incident_id)
            .expect("the story's investigation");
        let report = investigation.report.as_ref().expect("a report");
        assert_eq!(
            report["suspected_cause"]["service"], story.service,
            "{report}"
        );
        assert_eq!(
            report["suspected_cause"]["version"], story.bad_version,
            "{report}"
        );
        assert_eq!(
            report["suspected_cause"]["deployment_status"],
            "rolled_back"
        );
    }
    let calls: Vec<i32> = all
        .iter()
        .map(|investigation| investigation.mcp_calls)
        .collect();
    for busy in all
        .iter()
        .filter(|investigation| investigation.mcp_calls > 8)
    {
        let steps: Vec<(i32, String, String)> = sqlx::query_as(
            "SELECT attempt, name, status FROM internal_host.investigation_steps
              WHERE investigation_id = $1 ORDER BY id",
        )
        .bind(busy.id)
        .fetch_all(pool)
        .await
        .expect("the steps");
        println!(
            "a longer run ({} attempts, last error {:?}): {steps:?}",
            busy.attempts, busy.error
        );
    }
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
           FROM (SELECT extract(epoch FROM finished_at - started_at) * 1000 AS ms
                   FROM internal_host.investigations) runs",
    )
    .fetch_one(pool)
    .await
    .expect("the percentiles");
    println!("figures: run duration (claim to report posted) p50 {p50:.0} ms, p99 {p99:.0} ms");
    println!(
        "figures: {} incidents of two organisations investigated by two workers in {} ms; MCP calls per run {:?}",
        all.len(),
        elapsed.as_millis(),
        calls
    );
    one.abort();
    two.abort();
}

#[tokio::test]
async fn a_worker_killed_mid_run_is_taken_over_by_another_and_writes_one_note() {
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let options = fixed_seed_options();
    let story = seed::stories(&options).remove(0);
    let story_opened_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT opened_at FROM incidents WHERE title = $1")
            .bind(story.incident_title)
            .fetch_one(pool)
            .await
            .expect("the story's incident");
    let acme = agents(pool, &["acme"]).await;
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM incidents WHERE organization_id = $1 AND opened_at >= $2",
    )
    .bind(acme[0].organization_id)
    .bind(story_opened_at)
    .fetch_one(pool)
    .await
    .expect("a count");

    let mut slow = worker_config(acme.clone(), "doomed");
    slow.discover_since = Some(story_opened_at);
    slow.discovery_overlap = Duration::ZERO;
    slow.pause_between_calls = Duration::from_millis(400);
    let doomed_id = slow.worker_id.clone();
    let doomed = spawn_worker(&database, &url, slow).await;
    let deadline = Instant::now() + PATIENCE;
    let victim: Uuid = loop {
        let running: Option<Uuid> = sqlx::query_scalar(
            "SELECT i.id FROM internal_host.investigations i
              WHERE i.lease_owner = $1
                AND EXISTS (SELECT FROM internal_host.investigation_steps s WHERE s.investigation_id = i.id)",
        )
        .bind(&doomed_id)
        .fetch_optional(pool)
        .await
        .expect("a query");
        if let Some(running) = running {
            break running;
        }
        assert!(Instant::now() < deadline, "the first worker never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    doomed.abort();
    let killed = Instant::now();

    let mut rescuer = worker_config(acme, "rescuer");
    rescuer.discover_since = Some(story_opened_at);
    let rescuer = spawn_worker(&database, &url, rescuer).await;
    wait_for(pool, "the rescue", |counts| settled(counts, expected)).await;
    let all = stored_investigations(pool).await;
    for investigation in &all {
        assert_eq!(investigation.status, "completed", "{investigation:?}");
        let notes = agent_notes(pool, investigation.incident_id).await;
        assert_eq!(notes.len(), 1, "{investigation:?} {notes:?}");
    }
    let taken_over = all
        .iter()
        .find(|investigation| investigation.id == victim)
        .expect("the victim");
    assert_eq!(taken_over.attempts, 2, "{taken_over:?}");
    println!(
        "figures: the killed worker's investigation completed {} ms after the kill (lease 3 s)",
        killed.elapsed().as_millis()
    );
    rescuer.abort();
}

#[tokio::test]
async fn a_storm_of_fifty_incidents_stops_at_the_daily_budget_and_skips_the_rest_visibly() {
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let acme = agents(pool, &["acme"]).await;
    let services: Vec<String> =
        sqlx::query_scalar("SELECT name FROM services WHERE organization_id = $1 ORDER BY name")
            .bind(acme[0].organization_id)
            .fetch_all(pool)
            .await
            .expect("the services");
    let mut config = worker_config(acme, "storm");
    config.limits.daily_budget_per_organization = 5;
    config.limits.per_service_per_hour = 100;
    config.limits.per_organization_per_minute = 100;
    let started = Instant::now();
    for number in 0..50 {
        let service = &services[number % services.len()];
        open_incident(pool, "acme", service, &format!("Storm incident {number}")).await;
    }
    let worker = spawn_worker(&database, &url, config).await;
    wait_for(pool, "the storm to settle", |counts| settled(counts, 50)).await;
    let all = stored_investigations(pool).await;
    let completed: Vec<&Investigation> = all.iter().filter(|i| i.status == "completed").collect();
    let skipped: Vec<&Investigation> = all.iter().filter(|i| i.status == "skipped").collect();
    assert_eq!(completed.len(), 5, "{all:?}");
    assert_eq!(skipped.len(), 45, "{all:?}");
    for investigation in &skipped {
        let reason = investigation.status_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("daily budget of 5"), "{reason}");
        assert!(
            agent_notes(pool, investigation.incident_id)
                .await
                .is_empty()
        );
    }
    for investigation in &completed {
        assert_eq!(agent_notes(pool, investigation.incident_id).await.len(), 1);
    }
    println!(
        "figures: a storm of 50 incidents settled in {} ms (5 investigated, 45 skipped)",
        started.elapsed().as_millis()
    );
    worker.abort();
}

/// A TCP relay to internal-mcp that can be switched off: while off, it drops the connections it
/// relays and accepts new ones only to drop them, as a crashed server would look to the host.
struct Relay {
    url: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn to(target_url: &str) -> Self {
        let target = target_url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}/mcp", listener.local_addr().expect("an address"));
        let (up, watching) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watching.borrow() {
                    continue;
                }
                let target = target.clone();
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn while_internal_mcp_is_down_the_run_is_retried_with_backoff_and_completes_once_it_is_back()
{
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let relay = Relay::to(&url).await;
    let acme = agents(pool, &["acme"]).await;
    let incident_id = open_incident(pool, "acme", "checkout-api", "Checkout is flaky").await;
    let mut config = worker_config(acme, "patient");
    config.max_attempts = 10;
    config.pause_between_calls = Duration::from_millis(300);
    let worker = spawn_worker(&database, &relay.url, config).await;

    // Cut internal-mcp off once the run has recorded its first step.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let steps: i64 =
            sqlx::query_scalar("SELECT count(*) FROM internal_host.investigation_steps")
                .fetch_one(pool)
                .await
                .expect("a count");
        if steps > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.set(false);
    let deadline = Instant::now() + PATIENCE;
    let waiting = loop {
        let found = stored_investigations(pool)
            .await
            .into_iter()
            .next()
            .expect("the investigation");
        if found.attempts >= 2 && found.status == "queued" {
            break found;
        }
        assert!(Instant::now() < deadline, "no retry: {found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        waiting
            .status_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("retrying")),
        "{waiting:?}"
    );
    relay.set(true);
    wait_for(pool, "the run to complete", |counts| settled(counts, 1)).await;
    let done = stored_investigations(pool).await.remove(0);
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(agent_notes(pool, incident_id).await.len(), 1);
    let transport_errors: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_host.investigation_steps WHERE status = 'transport_error'",
    )
    .fetch_one(pool)
    .await
    .expect("a count");
    println!(
        "figures: completed after {} attempts, {transport_errors} recorded transport failures",
        done.attempts
    );
    worker.abort();
}

#[tokio::test]
async fn a_run_that_keeps_failing_is_marked_failed_with_its_reason_after_its_last_attempt() {
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let relay = Relay::to(&url).await;
    let acme = agents(pool, &["acme"]).await;
    let incident_id = open_incident(pool, "acme", "cart-service", "Carts are slow").await;
    let mut config = worker_config(acme, "unlucky");
    config.max_attempts = 2;
    config.pause_between_calls = Duration::from_millis(300);
    let worker = spawn_worker(&database, &relay.url, config).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let steps: i64 =
            sqlx::query_scalar("SELECT count(*) FROM internal_host.investigation_steps")
                .fetch_one(pool)
                .await
                .expect("a count");
        if steps > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.set(false);
    wait_for(pool, "the run to fail", |counts| settled(counts, 1)).await;
    let failed = stored_investigations(pool).await.remove(0);
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert_eq!(failed.attempts, 2);
    let reason = failed.status_reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("failed after 2 attempt(s): "),
        "{reason}"
    );
    assert!(agent_notes(pool, incident_id).await.is_empty());
    println!("the failure as recorded: {reason}");
    worker.abort();
}

#[tokio::test]
async fn with_self_confirmation_off_the_report_is_kept_and_nothing_is_written() {
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, internal_mcp) = spawn_internal_mcp(&database).await;
    let acme = agents(pool, &["acme"]).await;
    let incident_id = open_incident(pool, "acme", "search-api", "Search is slow").await;
    let mut config = worker_config(acme, "cautious");
    config.self_confirm_annotations = false;
    let worker = spawn_worker(&database, &url, config).await;
    wait_for(pool, "the run", |counts| settled(counts, 1)).await;
    let done = stored_investigations(pool).await.remove(0);
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(done.note_status, "disabled");
    assert!(done.report.is_some());
    assert!(agent_notes(pool, incident_id).await.is_empty());
    internal_mcp.write_audit_records().await;
    let privileged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM internal_mcp_audit_log WHERE tool = 'annotate_incident'",
    )
    .fetch_one(pool)
    .await
    .expect("a count");
    assert_eq!(privileged, 0, "not even a plan was asked for");
    worker.abort();
}

#[tokio::test]
async fn a_worker_stopped_mid_run_hands_the_investigation_back_at_once() {
    let database = seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let acme = agents(pool, &["acme"]).await;
    let incident_id = open_incident(pool, "acme", "payments-gateway", "Payments are slow").await;
    let mut config = worker_config(acme.clone(), "polite");
    config.pause_between_calls = Duration::from_millis(400);
    config.lease = Duration::from_secs(60);
    let state = AppState::connect(host_config(&database, &url))
        .await
        .expect("the host starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polite = tokio::spawn(async move {
        run_worker(&state, config, async {
            let _ = stopped.await;
        })
        .await
    });
    let deadline = Instant::now() + PATIENCE;
    loop {
        let steps: i64 =
            sqlx::query_scalar("SELECT count(*) FROM internal_host.investigation_steps")
                .fetch_one(pool)
                .await
                .expect("a count");
        if steps > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).expect("the worker listens");
    polite
        .await
        .expect("the worker task")
        .expect("a clean stop");
    let handed_back = stored_investigations(pool).await.remove(0);
    assert_eq!(handed_back.status, "queued", "{handed_back:?}");
    assert_eq!(
        handed_back.error.as_deref(),
        Some("the worker stopped during the run")
    );

    // Well before the 60 s lease would have expired, another worker finishes it.
    let next = spawn_worker(&database, &url, worker_config(acme, "next")).await;
    wait_for(pool, "the run", |counts| settled(counts, 1)).await;
    let done = stored_investigations(pool).await.remove(0);
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(agent_notes(pool, incident_id).await.len(), 1);
    next.abort();
}

/// Waits for the investigation of `incident_id` to finish.
async fn finished(pool: &PgPool, incident_id: Uuid) -> Investigation {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = stored_investigations(pool)
            .await
            .into_iter()
            .find(|investigation| investigation.incident_id == incident_id)
            .filter(|found| found.status == "completed" || found.status == "failed");
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no finished investigation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_model_adds_only_cited_claims_and_its_own_tool_call_is_a_recorded_step() {
    let (database, options) = live_seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let story = acme_story(&options);
    // The run's first step (the incident) is step 1 of this fresh database: the model cites it,
    // a step that does not exist, and nothing.
    let draft = serde_json::json!({
        "what_is_going_on": [{"text": "Checkout broke with the last deploy (model).", "cites": [1]}],
        "evidence": [
            {"text": "An uncited guess (model).", "cites": []},
            {"text": "A claim on a step that does not exist (model).", "cites": [999_999]},
        ],
        "next_steps": [{"text": "Compare the deploy counts (model).", "cites": ["step 1"]}],
    });
    let model = ScriptedModel::openai(vec![
        Reply::tool_call(
            "run_select",
            serde_json::json!({"sql": "SELECT count(*) AS deploys FROM deployments"}),
        ),
        Reply::text(format!("Here is the report:\n```json\n{draft}\n```")),
    ])
    .await;
    let mut config = worker_config(agents(pool, &["acme"]).await, "synthesis");
    only_new_incidents_ahead(pool).await;
    config.discover_since = Some(Utc::now());
    config.synthesis = Some(SynthesisConfig::new(model.provider()));
    let _worker = spawn_worker(&database, &url, config).await;
    let incident_id =
        open_incident(pool, "acme", story.service, "Checkout errors, with a model").await;
    let investigation = finished(pool, incident_id).await;
    assert_eq!(investigation.status, "completed", "{investigation:?}");
    let report = investigation.report.as_ref().expect("a report");

    let first_step: Uuid = sqlx::query_scalar(
        "SELECT investigation_id FROM internal_host.investigation_steps WHERE id = 1",
    )
    .fetch_one(pool)
    .await
    .expect("step 1");
    assert_eq!(first_step, investigation.id, "step 1 is this run's first");
    assert!(
        report["generated_by"]
            .as_str()
            .unwrap()
            .starts_with("playbook + "),
        "{report}"
    );
    assert_eq!(
        report["what_is_going_on"],
        serde_json::json!([{"text": "Checkout broke with the last deploy (model).", "cites": [1]}]),
        "the model's cited claim replaces the playbook's summary"
    );
    let texts = |section: &str| -> Vec<String> {
        report[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|claim| claim["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(texts("next_steps").contains(&"Compare the deploy counts (model).".to_owned()));
    assert!(
        !texts("evidence")
            .iter()
            .any(|text| text.contains("(model)")),
        "uncited claims are dropped by code: {report}"
    );
    assert!(report["dropped_claims"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(
        report["suspected_cause"]["version"], story.bad_version,
        "the cause stays the playbook's"
    );
    assert!(
        report["synthesis"]
            .as_str()
            .unwrap()
            .contains("2 model call(s), 1 tool call(s)"),
        "{report}"
    );

    // The model's query is a recorded step, and the model read its id back.
    let (step_id, status): (i64, String) = sqlx::query_as(
        "SELECT id, status FROM internal_host.investigation_steps
          WHERE investigation_id = $1 AND name = 'synthesis:run_select'",
    )
    .bind(investigation.id)
    .fetch_one(pool)
    .await
    .expect("the model's step");
    assert_eq!(status, "ok");
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"run_select"), "{offered:?}");
    for privileged in [
        "annotate_incident",
        "transition_incident",
        "silence_monitor",
    ] {
        assert!(
            !offered.contains(&privileged),
            "only read-only tools: {offered:?}"
        );
    }
    assert!(
        requests[1].raw_body.contains(&format!("[step {step_id}]")),
        "the tool result names its step"
    );
    let spent: i32 = sqlx::query_scalar(
        "SELECT model_calls FROM internal_host.investigation_budgets WHERE organization_id = $1",
    )
    .bind(agents(pool, &["acme"]).await[0].organization_id)
    .fetch_one(pool)
    .await
    .expect("the budget row");
    assert_eq!(spent, 2, "both model calls count against the daily budget");
    let notes = agent_notes(pool, incident_id).await;
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("playbook + "), "{}", notes[0]);
}

#[tokio::test]
async fn a_garbled_answer_or_a_spent_model_budget_leaves_the_playbooks_report() {
    let (database, options) = live_seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let story = acme_story(&options);
    // A daily budget of one model call, spent by the first investigation's garbled answer; the
    // second finds the budget spent.
    let model = ScriptedModel::openai(vec![Reply::text("I think it was the deploy.")]).await;
    let mut config = worker_config(agents(pool, &["acme"]).await, "budget");
    only_new_incidents_ahead(pool).await;
    config.discover_since = Some(Utc::now());
    let mut synthesis = SynthesisConfig::new(model.provider());
    synthesis.daily_model_calls_per_organization = 1;
    config.synthesis = Some(synthesis);
    let _worker = spawn_worker(&database, &url, config).await;
    let mut reasons = Vec::new();
    for title in [
        "Checkout errors, garbled model",
        "Checkout errors, no budget left",
    ] {
        let incident_id = open_incident(pool, "acme", story.service, title).await;
        let investigation = finished(pool, incident_id).await;
        assert_eq!(investigation.status, "completed", "{investigation:?}");
        let report = investigation.report.expect("a report");
        assert_eq!(report["generated_by"], "playbook", "{report}");
        assert_eq!(report["suspected_cause"]["version"], story.bad_version);
        reasons.push(report["synthesis"].as_str().unwrap().to_owned());
    }
    assert!(reasons[0].contains("held no JSON object"), "{reasons:?}");
    assert!(
        reasons[1].contains("daily model budget (calls, tokens or time) is spent"),
        "{reasons:?}"
    );
    assert_eq!(model.requests().len(), 1, "no call past the budget");
}

#[tokio::test]
async fn a_model_that_is_down_gets_the_run_retried_then_the_playbooks_report_stands() {
    let (database, options) = live_seeded_database().await;
    let pool = &database.pool;
    let (url, _stop) = spawn_internal_mcp(&database).await;
    let story = acme_story(&options);
    let down = internal_host::llm::LlmSettings::openai_compatible("http://127.0.0.1:9/v1", "down")
        .build()
        .expect("a provider");
    let mut config = worker_config(agents(pool, &["acme"]).await, "model-down");
    only_new_incidents_ahead(pool).await;
    config.discover_since = Some(Utc::now());
    config.max_attempts = 2;
    config.synthesis = Some(SynthesisConfig::new(down));
    let _worker = spawn_worker(&database, &url, config).await;
    let incident_id =
        open_incident(pool, "acme", story.service, "Checkout errors, model down").await;
    let investigation = finished(pool, incident_id).await;
    assert_eq!(investigation.status, "completed", "{investigation:?}");
    assert_eq!(investigation.attempts, 2, "the first attempt was retried");
    let report = investigation.report.as_ref().expect("a report");
    assert_eq!(report["generated_by"], "playbook");
    assert_eq!(report["suspected_cause"]["version"], story.bad_version);
    let synthesis = report["synthesis"].as_str().unwrap();
    assert!(synthesis.contains("could not be reached"), "{synthesis}");
    let notes = agent_notes(pool, incident_id).await;
    assert_eq!(notes.len(), 1, "one note, whatever the retries: {notes:?}");
}
