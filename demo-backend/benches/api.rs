//! Benchmark: seeding speed, and latency of a 7-day metrics range query over HTTP at the 10 million
//! sample scale. Prints figures; asserts nothing about time.
//!
//! `cargo bench -p demo-backend --bench api` (PostgreSQL from the test harness, like the tests).
//! `BENCH_SCALE` (default 5, about 10 million samples) and `BENCH_QUERIES` (default 200) tune it.

use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use demo_backend::domain::kinds::Role;
use demo_backend::http::{self, AppState, RateLimit};
use demo_backend::seed::{self, SeedOptions, SeedReport};
use tokio::sync::oneshot;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: u32 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let queries: usize = std::env::var("BENCH_QUERIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    let until = Utc::now().duration_trunc(chrono::Duration::minutes(1))?;

    for seed_scale in [1, scale] {
        let database =
            test_harness::database(&format!("bench-migrated-{seed_scale}"), async |pool| {
                demo_backend::MIGRATOR.run(pool).await
            })
            .await;
        let options = SeedOptions {
            scale: seed_scale,
            ..SeedOptions::new(until)
        };
        let report = seed::seed(&database.pool, &options).await?;
        print_seed(seed_scale, &report);
        if seed_scale != scale {
            continue;
        }
        let token = report.organizations[0]
            .users
            .iter()
            .find(|user| user.role == Role::Viewer)
            .map(|user| user.token.expose().to_owned())
            .expect("a seeded viewer");
        bench_range_queries(database.pool.clone(), &token, queries).await?;
    }
    Ok(())
}

fn print_seed(scale: u32, report: &SeedReport) {
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "seed --scale {scale}: {} samples, {} rows in {seconds:.1} s = {:.0} rows/s ({:.0} samples/s)",
        report.metric_samples,
        report.total_rows,
        report.total_rows as f64 / seconds,
        report.metric_samples as f64 / seconds,
    );
}

async fn bench_range_queries(db: sqlx::PgPool, token: &str, queries: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let limit = RateLimit {
        per_minute: 1_000_000,
        burst: 1_000_000,
    };
    tokio::spawn(http::serve(
        listener,
        AppState::new(db, limit),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let services: serde_json::Value = client
        .get(format!("http://{address}/api/v1/services?limit=200"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let service_ids: Vec<String> = services["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(!service_ids.is_empty(), "no services: {services}");

    let to = Utc::now().duration_trunc(chrono::Duration::minutes(1))?;
    let from = to - chrono::Duration::days(7);
    for (step, aggregation) in [("1h", "avg"), ("1h", "p95"), ("1m", "avg")] {
        let mut latencies = Vec::with_capacity(queries);
        let mut points = 0;
        for index in 0..queries {
            let service = &service_ids[index % service_ids.len()];
            let url = format!(
                "http://{address}/api/v1/services/{service}/metrics/error_rate?from={}&to={}&step={step}&aggregation={aggregation}",
                from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            let started = Instant::now();
            let response = client.get(&url).bearer_auth(token).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await?;
            latencies.push(started.elapsed());
            points = body["points"].as_array().map_or(0, Vec::len);
        }
        latencies.sort();
        println!(
            "range query, 7 days, step {step}, {aggregation} ({points} points): p50 {:.1} ms, p99 {:.1} ms over {queries} queries",
            millis(percentile(&latencies, 0.50)),
            millis(percentile(&latencies, 0.99)),
        );
    }
    let _ = stop.send(());
    Ok(())
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
