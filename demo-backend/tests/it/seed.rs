//! The demo seed against a real, freshly migrated PostgreSQL database: what it writes, that it
//! refuses a non-empty database, that it is deterministic, that the stories are there, and that
//! the tokens it hands out work.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use demo_backend::domain::kinds::{Role, Scope};
use demo_backend::domain::tokens;
use demo_backend::seed::{self, SEEDED_TABLES, SeedOptions};
use sqlx::PgPool;
use uuid::Uuid;

async fn migrated_database() -> test_harness::TestDatabase {
    crate::support::empty_database().await
}

/// A fixed end of data: a Thursday afternoon, so a one-day window covers two working days.
fn until() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 12, 15, 30, 0).unwrap()
}

fn one_day() -> SeedOptions {
    SeedOptions {
        days: 1,
        ..SeedOptions::new(until())
    }
}

/// Three days, so the stories land two days back as they do in the default week.
fn three_days() -> SeedOptions {
    SeedOptions {
        days: 3,
        ..SeedOptions::new(until())
    }
}

/// A copy of a database seeded once per test process with [`three_days`], for tests that only
/// read the seeded data.
async fn seeded_database() -> test_harness::TestDatabase {
    test_harness::database("seeded-three-days", async |pool| {
        demo_backend::MIGRATOR.run(pool).await?;
        seed::seed(pool, &three_days()).await.map(|_| ())
    })
    .await
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn counts(pool: &PgPool) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in SEEDED_TABLES {
        counts.push((table, count(pool, table).await));
    }
    counts
}

/// An md5 of every row the seed writes except API tokens (random by design), per table. Metric
/// series and samples are named by service and metric rather than by their generated identity.
async fn fingerprint(pool: &PgPool) -> Vec<(&'static str, String)> {
    let queries = [
        (
            "organizations",
            "SELECT id, slug, name, next_incident_number, created_at FROM organizations",
        ),
        ("users", "SELECT * FROM users"),
        ("services", "SELECT * FROM services"),
        (
            "metric_series",
            "SELECT s.id AS service_id, m.name, m.unit, m.description
               FROM metric_series m JOIN services s ON s.id = m.service_id",
        ),
        (
            "metric_samples",
            "SELECT s.id AS service_id, m.name, v.ts, v.value
               FROM metric_samples v
               JOIN metric_series m ON m.id = v.series_id
               JOIN services s ON s.id = m.service_id",
        ),
        ("monitors", "SELECT * FROM monitors"),
        ("alerts", "SELECT * FROM alerts"),
        ("incidents", "SELECT * FROM incidents"),
        ("incident_services", "SELECT * FROM incident_services"),
        ("incident_events", "SELECT * FROM incident_events"),
        ("deployments", "SELECT * FROM deployments"),
    ];
    let mut fingerprints = Vec::new();
    for (table, rows) in queries {
        let digest: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(row_text, E'\\n' ORDER BY row_text), ''))
               FROM (SELECT row_value::text AS row_text FROM ({rows}) AS row_value) AS row_texts"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        fingerprints.push((table, digest));
    }
    fingerprints
}

#[tokio::test]
async fn seeding_an_empty_database_reports_what_it_wrote() {
    let database = migrated_database().await;
    let report = seed::seed(&database.pool, &one_day()).await.unwrap();

    let slugs: Vec<&str> = report
        .organizations
        .iter()
        .map(|organization| organization.slug.as_str())
        .collect();
    assert_eq!(slugs, ["acme", "globex"]);
    assert_eq!(report.organizations[0].name, "Acme Retail");
    assert_eq!(report.organizations[1].name, "Globex Logistics");
    for organization in &report.organizations {
        let roles: Vec<Role> = organization.users.iter().map(|user| user.role).collect();
        assert!(roles.len() >= 5);
        assert!(roles.contains(&Role::Admin));
        assert!(
            roles
                .iter()
                .filter(|&&role| role == Role::Responder)
                .count()
                >= 2
        );
        assert!(roles.contains(&Role::Viewer));
    }

    let counts = counts(&database.pool).await;
    let count_of = |table: &str| counts.iter().find(|(name, _)| *name == table).unwrap().1;
    assert_eq!(report.services, count_of("services") as u64);
    assert_eq!(report.services, 40);
    assert_eq!(report.metric_samples, count_of("metric_samples") as u64);
    assert_eq!(report.metric_samples, 40 * 5 * 1440);
    let total: i64 = counts.iter().map(|(_, count)| count).sum();
    assert_eq!(report.total_rows, total as u64, "{counts:?}");
    assert_eq!(count_of("organizations"), 2);
    // Every person has a token and a password; each organisation's service user has neither.
    assert_eq!(count_of("api_tokens"), count_of("users") - 2);
    assert_eq!(count_of("user_passwords"), count_of("users") - 2);
    assert_eq!(count_of("metric_series"), 40 * 5);
    for (table, rows) in &counts {
        assert!(*rows > 0, "{table} is empty");
    }

    let stale_counters: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM organizations o
          WHERE o.next_incident_number <> (SELECT max(number) + 1 FROM incidents i WHERE i.organization_id = o.id)",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        stale_counters, 0,
        "next_incident_number follows the highest incident number"
    );
}

/// The seed names the tables it writes, to gather their statistics and no other's (a bare
/// `ANALYZE` warns once for each shared catalogue the database's owner may not analyze). A table
/// the seed fills but does not name would be left to autovacuum, with plans and internal-mcp's
/// cost limit working from no statistics until then.
#[tokio::test]
async fn the_seed_analyzes_exactly_the_tables_it_fills() {
    let database = migrated_database().await;
    seed::seed(&database.pool, &one_day()).await.unwrap();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I', table_name) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
            AND table_name <> '_sqlx_migrations'
          ORDER BY table_name",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let mut filled = Vec::new();
    for table in tables {
        if count(&database.pool, &table).await > 0 {
            filled.push(table);
        }
    }
    let mut named: Vec<&str> = SEEDED_TABLES.to_vec();
    named.sort_unstable();
    assert_eq!(filled, named, "the tables holding rows after seeding");

    // `last_analyze` is set by an ANALYZE command only; autovacuum sets `last_autoanalyze`.
    let analyzed: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables
          WHERE schemaname = 'public' AND last_analyze IS NOT NULL
          ORDER BY relname",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(analyzed, named, "the tables the seed analyzed");
}

#[tokio::test]
async fn seeding_a_database_with_organisations_is_refused_and_changes_nothing() {
    let database = migrated_database().await;
    seed::seed(&database.pool, &one_day()).await.unwrap();
    let counts_before = counts(&database.pool).await;
    let fingerprint_before = fingerprint(&database.pool).await;

    let error = seed::seed(&database.pool, &one_day())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("acme") && error.contains("globex"),
        "{error}"
    );
    assert!(error.contains("changed nothing"), "{error}");
    assert_eq!(counts(&database.pool).await, counts_before);
    assert_eq!(fingerprint(&database.pool).await, fingerprint_before);
}

#[tokio::test]
async fn any_existing_organisation_is_enough_to_refuse() {
    let database = migrated_database().await;
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'initech', 'Initech')")
        .bind(Uuid::now_v7())
        .execute(&database.pool)
        .await
        .unwrap();

    let error = seed::seed(&database.pool, &one_day())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("initech"), "{error}");
    assert_eq!(count(&database.pool, "organizations").await, 1);
    assert_eq!(count(&database.pool, "users").await, 0);
}

#[tokio::test]
async fn out_of_range_options_are_refused_before_writing() {
    let database = migrated_database().await;
    for options in [
        SeedOptions {
            scale: 0,
            ..one_day()
        },
        SeedOptions {
            scale: 101,
            ..one_day()
        },
        SeedOptions {
            days: 0,
            ..one_day()
        },
        SeedOptions {
            days: 31,
            ..one_day()
        },
    ] {
        let error = seed::seed(&database.pool, &options)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("must be between"), "{error}");
    }
    assert_eq!(count(&database.pool, "organizations").await, 0);
}

#[tokio::test]
async fn the_same_options_give_identical_rows() {
    let first = migrated_database().await;
    let second = migrated_database().await;
    let other_seed = migrated_database().await;
    seed::seed(&first.pool, &one_day()).await.unwrap();
    seed::seed(&second.pool, &one_day()).await.unwrap();
    let different = SeedOptions {
        random_seed: 7,
        ..one_day()
    };
    seed::seed(&other_seed.pool, &different).await.unwrap();

    let first_fingerprint = fingerprint(&first.pool).await;
    assert_eq!(first_fingerprint, fingerprint(&second.pool).await);
    // And the fingerprint does see a difference when there is one.
    let other_fingerprint = fingerprint(&other_seed.pool).await;
    for ((table, first_digest), (_, other_digest)) in
        first_fingerprint.iter().zip(&other_fingerprint)
    {
        assert_ne!(
            first_digest, other_digest,
            "{table} does not depend on the random seed"
        );
    }
}

#[tokio::test]
async fn every_story_is_planted() {
    let database = seeded_database().await;
    let stories = seed::stories(&three_days());
    assert_eq!(stories.len(), 2);
    for story in &stories {
        check_story(&database.pool, story).await;
    }
}

async fn check_story(pool: &PgPool, story: &seed::Story) {
    let (organization_id, service_id): (Uuid, Uuid) = sqlx::query_as(
        "SELECT o.id, s.id FROM services s JOIN organizations o ON o.id = s.organization_id
          WHERE o.slug = $1 AND s.name = $2",
    )
    .bind(story.organization_slug)
    .bind(story.service)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        story.deployed_at > until() - TimeDelta::days(3)
            && story.deployed_at < until() - TimeDelta::days(1)
    );

    let bad_deploys: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT status::text, started_at FROM deployments WHERE service_id = $1 AND version = $2",
    )
    .bind(service_id)
    .bind(story.bad_version)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        bad_deploys,
        [("rolled_back".to_owned(), story.deployed_at)],
        "{story:?}"
    );
    let rollbacks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments
          WHERE service_id = $1 AND version = $2 AND status = 'succeeded' AND finished_at = $3",
    )
    .bind(service_id)
    .bind(story.rollback_version)
    .bind(story.spike_end)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(rollbacks, 1, "the rollback deployment of {story:?}");

    let alerts: Vec<(Uuid, DateTime<Utc>, Option<Uuid>)> = sqlx::query_as(
        "SELECT a.id, a.started_at, a.incident_id FROM alerts a JOIN monitors m ON m.id = a.monitor_id
          WHERE a.service_id = $1 AND m.metric = 'error_rate' AND a.started_at >= $2 AND a.started_at < $3",
    )
    .bind(service_id)
    .bind(story.spike_start)
    .bind(story.spike_end)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        alerts.len(),
        1,
        "one error-rate alert during the spike of {story:?}"
    );
    let (alert_id, _, alert_incident_id) = alerts[0];

    let (incident_id, status, severity, resolved_at): (
        Uuid,
        String,
        String,
        Option<DateTime<Utc>>,
    ) = sqlx::query_as(
        "SELECT id, status::text, severity::text, resolved_at FROM incidents
          WHERE organization_id = $1 AND title = $2",
    )
    .bind(organization_id)
    .bind(story.incident_title)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        alert_incident_id,
        Some(incident_id),
        "alert {alert_id} is linked to the incident"
    );
    assert_eq!(status, "resolved");
    assert!(severity == "high" || severity == "critical", "{severity}");
    assert!(resolved_at.unwrap() > story.spike_end);
    let affected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM incident_services WHERE incident_id = $1 AND service_id = $2",
    )
    .bind(incident_id)
    .bind(service_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(affected, 1);

    let timeline: Vec<(String, String, Option<Role>)> = sqlx::query_as(
        "SELECT e.kind, e.body, u.role FROM incident_events e LEFT JOIN users u ON u.id = e.author_id
          WHERE e.incident_id = $1 ORDER BY e.at, e.id",
    )
    .bind(incident_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"opened"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"resolved"), "{kinds:?}");
    for expected in ["alert_linked", "acknowledged", "note"] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let acknowledged_by = timeline
        .iter()
        .find(|(kind, _, _)| kind == "acknowledged")
        .unwrap()
        .2;
    assert_eq!(acknowledged_by, Some(Role::Responder));
    let notes: Vec<&str> = timeline
        .iter()
        .filter(|(kind, _, _)| kind == "note")
        .map(|(_, body, _)| body.as_str())
        .collect();
    assert!(
        notes.iter().any(|note| note.contains(story.bad_version)),
        "{notes:?}"
    );
    assert!(
        notes.contains(&format!("Rolling back to {}", story.rollback_version).as_str()),
        "{notes:?}"
    );

    let (during_spike, hour_before): (f64, f64) = sqlx::query_as(
        "SELECT avg(value) FILTER (WHERE ts >= $2 AND ts < $3),
                avg(value) FILTER (WHERE ts >= $2 - interval '1 hour' AND ts < $2)
           FROM metric_samples v JOIN metric_series m ON m.id = v.series_id
          WHERE m.service_id = $1 AND m.name = 'error_rate'",
    )
    .bind(service_id)
    .bind(story.spike_start)
    .bind(story.spike_end)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        during_spike > 5.0 * hour_before,
        "{during_spike} vs {hour_before} for {story:?}"
    );
    assert!((0.1..=0.3).contains(&during_spike), "{during_spike}");
}

#[tokio::test]
async fn every_reported_token_authenticates_with_the_highest_scopes_of_its_role() {
    let database = migrated_database().await;
    let report = seed::seed(&database.pool, &one_day()).await.unwrap();
    for organization in &report.organizations {
        for user in &organization.users {
            let principal = tokens::authenticate(&database.pool, user.token.expose())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("the token of {} does not authenticate", user.email));
            assert_eq!(principal.organization_slug, organization.slug);
            assert_eq!(principal.user_email, user.email);
            assert_eq!(principal.role, user.role);
            assert_eq!(
                principal.scopes.iter().max(),
                Some(&Scope::highest_for(user.role))
            );
        }
    }
    let unknown = format!("{}{}", tokens::TOKEN_PREFIX, "0".repeat(64));
    assert!(
        tokens::authenticate(&database.pool, &unknown)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn each_organisation_has_open_acknowledged_and_resolved_incidents() {
    let database = seeded_database().await;
    for slug in ["acme", "globex"] {
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT i.status::text, count(*) FROM incidents i JOIN organizations o ON o.id = i.organization_id
              WHERE o.slug = $1 GROUP BY 1 ORDER BY 1",
        )
        .bind(slug)
        .fetch_all(&database.pool)
        .await
        .unwrap();
        let count_of = |status: &str| {
            statuses
                .iter()
                .find(|(name, _)| name == status)
                .map_or(0, |(_, count)| *count)
        };
        assert!(count_of("open") >= 1, "{slug}: {statuses:?}");
        assert!(count_of("acknowledged") >= 1, "{slug}: {statuses:?}");
        assert!(count_of("resolved") >= 2, "{slug}: {statuses:?}");

        // The open incident is about something still going on: its alert is firing at the end.
        let firing_alerts_of_open_incidents: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM alerts a
               JOIN incidents i ON i.id = a.incident_id
               JOIN organizations o ON o.id = i.organization_id
              WHERE o.slug = $1 AND i.status = 'open' AND a.state = 'firing' AND a.resolved_at IS NULL",
        )
        .bind(slug)
        .fetch_one(&database.pool)
        .await
        .unwrap();
        assert!(firing_alerts_of_open_incidents >= 1, "{slug}");
    }

    // Every incident's timeline starts when it opened, and nothing happens after the data ends.
    let inconsistent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM incidents i
          WHERE NOT EXISTS (SELECT 1 FROM incident_events e
                             WHERE e.incident_id = i.id AND e.kind = 'opened' AND e.at = i.opened_at)
             OR EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND (e.at < i.opened_at OR e.at > $1))
             OR (i.status = 'acknowledged') <> (i.acknowledged_at IS NOT NULL AND i.resolved_at IS NULL)",
    )
    .bind(until())
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(inconsistent, 0);
}

#[tokio::test]
async fn the_noisiest_monitor_of_each_organisation_is_its_traffic_surge_rule() {
    let database = seeded_database().await;
    let noisiest: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (o.slug) o.slug, m.name, count(*) AS alerts
           FROM alerts a JOIN monitors m ON m.id = a.monitor_id JOIN organizations o ON o.id = a.organization_id
          GROUP BY o.slug, m.name
          ORDER BY o.slug, alerts DESC",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let names: Vec<(&str, &str)> = noisiest
        .iter()
        .map(|(slug, name, _)| (slug.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("acme", "storefront-web traffic surge"),
            ("globex", "fleet-telemetry traffic surge")
        ]
    );
    let summaries_out_of_format: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts a JOIN monitors m ON m.id = a.monitor_id JOIN services s ON s.id = a.service_id
          WHERE a.summary <> m.metric || ' above ' || m.threshold::text || ' on ' || s.name
             OR a.labels <> jsonb_build_object('service', s.name, 'metric', m.metric, 'team', s.team)
             OR a.severity <> m.severity",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(summaries_out_of_format, 0);
}

/// The seed drops and re-creates the samples' keys around its bulk load: they must come back
/// exactly as the migrations define them.
#[tokio::test]
async fn the_samples_constraints_after_seeding_are_the_migrations_own() {
    let constraints = async |pool: &PgPool| -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = 'metric_samples'::regclass ORDER BY conname",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    let migrated = migrated_database().await;
    let seeded = seeded_database().await;
    let expected = constraints(&migrated.pool).await;
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(constraints(&seeded.pool).await, expected);
}
