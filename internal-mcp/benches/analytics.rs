//! Benchmark: one analytics question, "which deploy caused the checkout error spike?", answered
//! over real HTTP (a) by internal-mcp's `correlate_incident` and (b) through external-mcp's tools
//! the way a model would chain them (get_incident, list_deployments, then metric_summary before and
//! after each deployment), at the 10-million-sample scale. Prints p50/p99; asserts nothing about time.
//!
//! It also measures `run_select` of `select 1` and of a group-by over the samples, through an rmcp
//! client over HTTP and on a direct reader connection, side by side, with what every call costs
//! before its tool runs (`tools/list`, one round trip to PostgreSQL) to read the difference by.
//!
//! `cargo bench -p internal-mcp --bench analytics` (PostgreSQL from the test harness, like the
//! tests). `BENCH_SCALE` (default 5, about 10 million samples over 7 days) and `BENCH_QUERIES`
//! (default 30) tune it. The external path runs the `external-mcp` binary (built on first use)
//! against demo-backend's REST API in process; if it cannot be built or started, that half is
//! reported as skipped.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use demo_backend::domain::kinds::Role;
use demo_backend::http::{self, RateLimit};
use demo_backend::seed::{self, SeedOptions};
use internal_mcp::analytics::correlation;
use internal_mcp::auth::{CredentialRequest, mint_credential};
use internal_mcp::config::{Config, Endpoint, Limits, SigningKey};
use internal_mcp::reader::{Reader, with_session_settings};
use internal_mcp::{AppState, serve};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

type Client = RunningService<RoleClient, ()>;

const READER_PASSWORD: &str = "internal-mcp-bench-reader";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: u32 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let queries: usize = std::env::var("BENCH_QUERIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    // A fixed Thursday afternoon: the story's deploy then lands on Tuesday at 16:00 UTC, in the
    // busy release hours, so the question has the other deployments of that afternoon to sift.
    let until = Utc
        .with_ymd_and_hms(2025, 6, 12, 16, 0, 0)
        .single()
        .expect("a valid time");

    let database = test_harness::database(&format!("internal-mcp-bench-{scale}"), async |pool| {
        demo_backend::MIGRATOR.run(pool).await
    })
    .await;
    let options = SeedOptions {
        scale,
        ..SeedOptions::new(until)
    };
    let report = seed::seed(&database.pool, &options).await?;
    println!(
        "seed --scale {scale}: {} samples in {:.1} s",
        report.metric_samples,
        report.elapsed.as_secs_f64()
    );
    test_harness::give_role_a_login("internal_mcp_reader", READER_PASSWORD).await?;

    let story = seed::stories(&options)
        .into_iter()
        .find(|story| story.organization_slug == "acme")
        .expect("acme's story");
    let (organization_id, user_id, number): (Uuid, Uuid, i32) = sqlx::query_as(
        "SELECT o.id, u.id, i.number FROM organizations o
           JOIN users u ON u.organization_id = o.id AND u.role = 'viewer'
           JOIN incidents i ON i.organization_id = o.id AND i.title = $1
          WHERE o.slug = 'acme'",
    )
    .bind(story.incident_title)
    .fetch_one(&database.pool)
    .await?;
    let incident = format!("INC-{number}");
    println!(
        "question: which deploy caused {incident} ({})? expected answer: {} {}",
        story.incident_title, story.service, story.bad_version
    );

    // (a) internal-mcp.
    let key = SigningKey::new(b"internal-mcp bench signing key, 32+ bytes".to_vec())?;
    let reader = database
        .connect_options
        .clone()
        .username("internal_mcp_reader")
        .password(READER_PASSWORD);
    let mut config = Config::new(
        database.connect_options.clone(),
        reader.clone(),
        key.clone(),
    );
    // The harness's server holds other databases, all open to the cluster-wide reader role.
    config.allow_reader_in_other_databases = true;
    let state = AppState::connect(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (_stop_internal, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let credential = mint_credential(
        &key,
        &CredentialRequest {
            issuer: "internal-host".into(),
            user_id,
            organization_id,
            role: Role::Viewer,
            lifetime: Duration::from_secs(600),
            single_use: false,
        },
    )?;
    let internal = connect(
        &format!("http://{address}{}", Endpoint::All.path()),
        &credential,
    )
    .await?;
    let mut latencies = Vec::with_capacity(queries);
    let mut answer = String::new();
    for _ in 0..queries {
        let started = Instant::now();
        let result = call(
            &internal,
            "correlate_incident",
            json!({ "incident": incident }),
        )
        .await?;
        latencies.push(started.elapsed());
        let top = &structured(&result)?["suspects"][0];
        answer = format!(
            "{} {}",
            top["service"].as_str().unwrap_or("?"),
            top["version"].as_str().unwrap_or("?")
        );
    }
    print_latencies(
        "internal-mcp correlate_incident (1 tool call)",
        &mut latencies,
        &answer,
    );
    // internal-mcp's own reader, on connections of its own, for the direct side of the figures
    // (two, as the server's pool has several: a released connection is pinged before its reuse).
    let direct_reader = Reader::new(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(with_session_settings(reader.clone(), &Limits::DEFAULT))
            .await?,
        Limits::DEFAULT,
    );
    print_ranking_plan(&database.pool, &direct_reader, organization_id, number).await?;
    bench_http(&format!("http://{address}"), &credential, queries * 10).await?;
    bench_run_select(
        &internal,
        &direct_reader,
        &reader,
        organization_id,
        until,
        queries * 10,
    )
    .await?;

    // (b) external-mcp's tools over the public REST API.
    let token = report.organizations[0]
        .users
        .iter()
        .find(|user| user.role == Role::Viewer)
        .map(|user| user.token.expose().to_owned())
        .expect("a seeded viewer");
    match bench_external(database.pool.clone(), &token, &incident, queries).await {
        Ok(()) => {}
        Err(error) => println!("external-mcp path skipped: {error:#}"),
    }
    Ok(())
}

/// The plan of correlate_incident's ranking query as it ran (EXPLAIN ANALYZE, as the reader, in
/// internal-mcp's transaction), to show which indexes answer it.
async fn print_ranking_plan(
    pool: &sqlx::PgPool,
    reader: &Reader,
    organization_id: Uuid,
    number: i32,
) -> anyhow::Result<()> {
    let incident_id: Uuid =
        sqlx::query_scalar("SELECT id FROM incidents WHERE organization_id = $1 AND number = $2")
            .bind(organization_id)
            .bind(number)
            .fetch_one(pool)
            .await?;
    let mut transaction = reader.begin(organization_id).await?;
    let lines: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {}",
        correlation::RANK_DEPLOYMENTS
    ))
    .bind(incident_id)
    .bind(180_i32)
    .bind(30_i32)
    .fetch_all(&mut *transaction)
    .await?;
    println!("correlate_incident's ranking query, as it ran:");
    for line in lines {
        println!("    {line}");
    }
    Ok(())
}

/// Where a call's time goes on the server's side: a bare HTTP round trip, `tools/list` and
/// `run_select` of `select 1` sent by hand (no MCP client), which add the credential check and
/// role look-up, then the tool.
async fn bench_http(base: &str, credential: &str, runs: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |message: &Value| {
        http.post(format!("{base}{}", Endpoint::All.path()))
            .bearer_auth(credential)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(message)
    };
    let mut bare = Vec::with_capacity(runs);
    let mut listing = Vec::with_capacity(runs);
    let mut selecting = Vec::with_capacity(runs);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let select = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_select", "arguments": {"sql": "SELECT 1 AS one"}}});
    for _ in 0..runs {
        bare.push(timed(http.get(format!("{base}/healthz"))).await?.0);
        listing.push(timed(post(&list)).await?.0);
        let (elapsed, answer) = timed(post(&select)).await?;
        selecting.push(elapsed);
        anyhow::ensure!(
            String::from_utf8_lossy(&answer).contains("row_count"),
            "run_select did not answer: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    print_latencies("HTTP GET /healthz (axum, no credential)", &mut bare, "-");
    print_latencies(
        "tools/list over HTTP without an MCP client (credential check, role lookup)",
        &mut listing,
        "-",
    );
    print_latencies(
        "run_select select 1 over HTTP without an MCP client",
        &mut selecting,
        "-",
    );
    Ok(())
}

/// How long `request` took to answer in full, and its body; a failure status is an error.
async fn timed(request: reqwest::RequestBuilder) -> anyhow::Result<(Duration, axum::body::Bytes)> {
    let started = Instant::now();
    let body = request.send().await?.error_for_status()?.bytes().await?;
    Ok((started.elapsed(), body))
}

/// `run_select` through rmcp over HTTP against the same query on a direct reader connection,
/// side by side: bare (one query on a connection with the organisation set, server defaults), in
/// the transaction internal-mcp opens for its analytics (`Reader::begin`), and through
/// `Reader::run_select` without HTTP. Before them, what any call costs before its tool runs:
/// `tools/list` over rmcp/HTTP (HTTP, the credential check and the user's role lookup) and one
/// round trip to PostgreSQL, so the difference can be read in round trips.
async fn bench_run_select(
    internal: &Client,
    reader: &Reader,
    reader_options: &sqlx::postgres::PgConnectOptions,
    organization_id: Uuid,
    until: DateTime<Utc>,
    runs: usize,
) -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _};
    let mut listing = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        internal.list_tools(None).await?;
        listing.push(started.elapsed());
    }
    print_latencies(
        "tools/list over rmcp/HTTP (HTTP, credential check, role lookup)",
        &mut listing,
        "-",
    );
    let mut direct = sqlx::PgConnection::connect_with(reader_options).await?;
    let mut round_trips = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        direct.execute("SELECT 1").await?;
        round_trips.push(started.elapsed());
    }
    print_latencies(
        "one round trip to PostgreSQL (simple-protocol SELECT 1)",
        &mut round_trips,
        "-",
    );
    direct
        .execute(format!("SET app.organization_id = '{organization_id}'").as_str())
        .await?;

    // Every series of the organisation over the 6 hours before the seed's end, per metric: an
    // index range scan per series, the way the tools teach.
    let group_by = format!(
        "SELECT ms.name AS metric, count(*) AS samples, avg(sample.value) AS mean
           FROM metric_series ms
           JOIN metric_samples sample ON sample.series_id = ms.id
          WHERE sample.ts >= TIMESTAMPTZ '{}' AND sample.ts < TIMESTAMPTZ '{}'
          GROUP BY ms.name",
        (until - chrono::Duration::hours(6)).to_rfc3339(),
        until.to_rfc3339()
    );
    for (label, sql) in [
        ("select 1", "SELECT 1 AS one"),
        ("group-by over 6 h of samples", group_by.as_str()),
    ] {
        let mut over_mcp = Vec::with_capacity(runs);
        let mut bare = Vec::with_capacity(runs);
        let mut in_transaction = Vec::with_capacity(runs);
        let mut guarded = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            reader.run_select(organization_id, sql, None).await?;
            guarded.push(started.elapsed());

            let started = Instant::now();
            structured(&call(internal, "run_select", json!({ "sql": sql })).await?)?;
            over_mcp.push(started.elapsed());

            let started = Instant::now();
            sqlx::query(sql).fetch_all(&mut direct).await?;
            bare.push(started.elapsed());

            let started = Instant::now();
            let mut transaction = reader.begin(organization_id).await?;
            sqlx::query(sql).fetch_all(&mut *transaction).await?;
            drop(transaction);
            in_transaction.push(started.elapsed());
        }
        print_latencies(
            &format!("run_select {label} over rmcp/HTTP"),
            &mut over_mcp,
            "-",
        );
        print_latencies(
            &format!("{label} on a direct reader connection, bare"),
            &mut bare,
            "-",
        );
        print_latencies(
            &format!("{label} on a direct reader connection, in internal-mcp's transaction"),
            &mut in_transaction,
            "-",
        );
        print_latencies(
            &format!(
                "{label} through Reader::run_select, no HTTP (parse, guard function, reading)"
            ),
            &mut guarded,
            "-",
        );
    }
    Ok(())
}

async fn bench_external(
    pool: sqlx::PgPool,
    token: &str,
    incident: &str,
    queries: usize,
) -> anyhow::Result<()> {
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_address = api_listener.local_addr()?;
    let (_stop_api, stopped) = oneshot::channel::<()>();
    let limit = RateLimit {
        per_minute: 1_000_000,
        burst: 1_000_000,
    };
    tokio::spawn(http::serve(
        api_listener,
        http::AppState::new(pool, limit),
        async move {
            let _ = stopped.await;
        },
    ));

    let binary = test_harness::process::binary("external-mcp");
    let port = test_harness::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let api_url = format!("http://{api_address}");
    let _external = test_harness::process::spawn(
        &binary,
        &["--transport", "http", "--listen", &listen],
        &[("DEMO_API_URL", api_url.as_str()), ("RUST_LOG", "warn")],
    );
    let client = wait_for_client(&format!("http://{listen}/mcp"), token).await?;

    let mut latencies = Vec::with_capacity(queries);
    let mut answer = String::new();
    let mut tool_calls = 0;
    for _ in 0..queries {
        let started = Instant::now();
        let (found, calls) = answer_through_external_tools(&client, incident).await?;
        latencies.push(started.elapsed());
        answer = found;
        tool_calls = calls;
    }
    print_latencies(
        &format!("external-mcp tools ({tool_calls} tool calls)"),
        &mut latencies,
        &answer,
    );
    Ok(())
}

/// The chain a model would run with external-mcp: the incident, the deployments of the three hours
/// before it, and each deployment's error rate in the hour before against the half hour after.
async fn answer_through_external_tools(
    client: &Client,
    incident: &str,
) -> anyhow::Result<(String, usize)> {
    let mut calls = 1;
    let view = structured(&call(client, "get_incident", json!({ "incident": incident })).await?)?;
    let opened_at = parse_time(&view["opened_at"])?;
    let window_start = opened_at - chrono::Duration::hours(3);
    // Deployments are listed newest first: page back until the window's start.
    let mut deployments = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        calls += 1;
        let mut arguments = json!({"since": window_start.to_rfc3339(), "limit": 50});
        if let Some(cursor) = &cursor {
            arguments["cursor"] = json!(cursor);
        }
        let page = structured(&call(client, "list_deployments", arguments).await?)?;
        deployments.extend(page["deployments"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let mut best: Option<(f64, String)> = None;
    for deployment in &deployments {
        let started_at = parse_time(&deployment["started_at"])?;
        if started_at > opened_at {
            continue;
        }
        let service = deployment["service"].as_str().unwrap_or_default();
        let before = call(
            client,
            "metric_summary",
            json!({"service": service, "metric": "error_rate", "window": "1h", "end": started_at.to_rfc3339()}),
        )
        .await?;
        let after = call(
            client,
            "metric_summary",
            json!({"service": service, "metric": "error_rate", "window": "30m",
                   "end": (started_at + chrono::Duration::minutes(30)).to_rfc3339()}),
        )
        .await?;
        calls += 2;
        let before = structured(&before)?["avg"].as_f64().unwrap_or_default();
        let after = structured(&after)?["avg"].as_f64().unwrap_or_default();
        let increase = after - before;
        let version = deployment["version"].as_str().unwrap_or_default();
        if best.as_ref().is_none_or(|(top, _)| increase > *top) {
            best = Some((increase, format!("{service} {version}")));
        }
    }
    Ok((
        best.map(|(_, answer)| answer)
            .unwrap_or_else(|| "none".into()),
        calls,
    ))
}

async fn connect(url: &str, credential: &str) -> anyhow::Result<Client> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(credential.to_owned()),
    );
    Ok(().serve(transport).await?)
}

async fn wait_for_client(url: &str, token: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match connect(url, token).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context("external-mcp did not come up"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn call(client: &Client, tool: &str, arguments: Value) -> anyhow::Result<CallToolResult> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    Ok(client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await?)
}

fn structured(result: &CallToolResult) -> anyhow::Result<Value> {
    let text = result
        .content
        .iter()
        .find_map(|content| content.as_text().map(|text| text.text.clone()))
        .unwrap_or_default();
    anyhow::ensure!(result.is_error != Some(true), "the tool failed: {text}");
    match &result.structured_content {
        Some(value) => Ok(value.clone()),
        None => Ok(serde_json::from_str(&text)?),
    }
}

fn parse_time(value: &Value) -> anyhow::Result<DateTime<Utc>> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{value} is not a time"))?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

fn print_latencies(label: &str, latencies: &mut [Duration], answer: &str) {
    latencies.sort();
    let percentile = |share: f64| {
        let index =
            ((latencies.len() as f64 * share).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    println!(
        "{label}: {} runs, p50 {:.1} ms, p99 {:.1} ms; answer: {answer}",
        latencies.len(),
        percentile(0.5),
        percentile(0.99)
    );
}
