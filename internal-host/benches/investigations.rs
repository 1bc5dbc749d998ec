//! Benchmark: AgenticOps at the 10-million-sample scale. Incidents are opened one after another
//! on the seeded story's service (its bad deploy landed 20 minutes ago), and each time from the
//! incident's creation to its finished report is measured, with the real internal-mcp over HTTP
//! and a real worker: first with the playbook alone, then with a language model when
//! `BENCH_LLM_URL` names an OpenAI-compatible server (for the local model:
//! `ops/local-model start --port 8093 --log /tmp/llm.log --pid /tmp/llm.pid`, then
//! `BENCH_LLM_URL=http://127.0.0.1:8093/v1`; `BENCH_LLM_MODEL` defaults to `gemma-3-270m`).
//! Prints p50/p99 and the MCP and model calls per run; asserts nothing about time.
//!
//! `cargo bench -p internal-host --bench investigations` (PostgreSQL from the test harness, like
//! the tests). `BENCH_SCALE` (default 5: about 10 million samples over 7 days) and
//! `BENCH_INCIDENTS` (default 10 per variant) tune it.

#[allow(dead_code)] // the tests' helpers; the benchmark uses a few
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use demo_backend::seed::{self, SeedOptions};
use internal_host::AppState;
use internal_host::investigations::{
    AgentIdentity, InvestigationConfig, InvestigationLimits, SynthesisConfig, run_worker,
};
use internal_host::llm::LlmSettings;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use support::{host_config, open_incident};

/// One finished investigation: seconds from the incident's creation, MCP calls, what the model
/// did.
struct Run {
    seconds: f64,
    mcp_calls: i32,
    status: String,
    synthesis: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: u32 = env_number("BENCH_SCALE", 5);
    let incidents: usize = env_number("BENCH_INCIDENTS", 10);
    let until = Utc::now() + TimeDelta::hours(6) - TimeDelta::minutes(20);
    let options = SeedOptions {
        scale,
        ..SeedOptions::new(until)
    };
    let seeding = Instant::now();
    let database = support::seeded_with(&format!("internal-host-bench-{scale}"), options).await;
    let pool = &database.pool;
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples")
        .fetch_one(pool)
        .await?;
    println!(
        "seeded {samples} samples (scale {scale}) in {:.0} s",
        seeding.elapsed().as_secs_f64()
    );
    let story = seed::stories(&options)
        .into_iter()
        .find(|story| story.organization_slug == "acme")
        .expect("acme's story");
    let (url, _stop) = support::spawn_internal_mcp(&database).await;
    let agent = agent(pool, "acme").await?;

    let mut variants: Vec<(String, Option<SynthesisConfig>)> =
        vec![("playbook alone".into(), None)];
    if let Ok(base_url) = std::env::var("BENCH_LLM_URL") {
        let model = std::env::var("BENCH_LLM_MODEL").unwrap_or_else(|_| "gemma-3-270m".into());
        let provider = LlmSettings::openai_compatible(base_url, &model).build()?;
        variants.push((
            format!("with the model {model}"),
            Some(SynthesisConfig::new(provider)),
        ));
    } else {
        println!("BENCH_LLM_URL is not set: the model's variant is skipped");
    }
    for (label, synthesis) in variants {
        let mut config = InvestigationConfig::new(vec![agent]);
        config.discover_since = Some(Utc::now());
        config.poll_interval = Duration::from_millis(200);
        config.limits = InvestigationLimits {
            daily_budget_per_organization: 10_000,
            per_organization_per_minute: 10_000,
            per_service_per_hour: 10_000,
        };
        config.synthesis = synthesis;
        let state = AppState::connect(host_config(&database, &url)).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = tokio::spawn(async move {
            run_worker(&state, config, async {
                let _ = stopped.await;
            })
            .await
        });
        let mut runs = Vec::with_capacity(incidents);
        for number in 0..incidents {
            let opened = Instant::now();
            let title = format!("Checkout errors ({label}, run {number})");
            let incident_id = open_incident(pool, "acme", story.service, &title).await;
            runs.push(finished(pool, incident_id, opened).await?);
        }
        let _ = stop.send(());
        worker.await??;
        report(&label, &runs);
    }
    Ok(())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The organisation's service user.
async fn agent(pool: &PgPool, slug: &str) -> anyhow::Result<AgentIdentity> {
    let (organization_id, user_id): (Uuid, Uuid) = sqlx::query_as(
        "SELECT u.organization_id, u.id FROM users u JOIN organizations o ON o.id = u.organization_id
          WHERE u.email LIKE $1 || '@%' AND o.slug = $2",
    )
    .bind(seed::SERVICE_USER_HANDLE)
    .bind(slug)
    .fetch_one(pool)
    .await?;
    Ok(AgentIdentity {
        organization_id,
        user_id,
    })
}

/// Waits for the investigation of `incident_id` to end (10 minutes at most).
async fn finished(pool: &PgPool, incident_id: Uuid, opened: Instant) -> anyhow::Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let row: Option<(String, i32, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT status, mcp_calls, report FROM internal_host.investigations
              WHERE incident_id = $1 AND status IN ('completed', 'failed', 'skipped')",
        )
        .bind(incident_id)
        .fetch_optional(pool)
        .await?;
        if let Some((status, mcp_calls, report)) = row {
            return Ok(Run {
                seconds: opened.elapsed().as_secs_f64(),
                mcp_calls,
                status,
                synthesis: report
                    .as_ref()
                    .and_then(|report| report["synthesis"].as_str())
                    .map(str::to_owned),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no investigation ended in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(label: &str, runs: &[Run]) {
    let mut seconds: Vec<f64> = runs.iter().map(|run| run.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((seconds.len() as f64 - 1.0) * p).round() as usize;
        seconds.get(index).copied().unwrap_or(f64::NAN)
    };
    let completed = runs.iter().filter(|run| run.status == "completed").count();
    let calls: Vec<i32> = runs.iter().map(|run| run.mcp_calls).collect();
    println!(
        "{label}: incident created to report finished, p50 {:.2} s, p99 {:.2} s over {} runs ({completed} completed); MCP calls per run {calls:?}",
        percentile(0.5),
        percentile(0.99),
        runs.len(),
    );
    if let Some(synthesis) = runs.iter().find_map(|run| run.synthesis.as_deref()) {
        println!("{label}: the model, first run: {synthesis}");
    }
}
