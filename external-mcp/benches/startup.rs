//! Startup cost of the release binary over stdio, as a desktop host pays it: the time from
//! spawning `external-mcp` to the answer of its first `tools/list`, and its resident memory
//! (VmRSS) when idle. Runs against a real demo-backend on the harness's PostgreSQL.
//!
//! `cargo bench -p external-mcp --bench startup` (prints figures; asserts nothing).

use test_harness::backend;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_external-mcp");
const RUNS: usize = 7;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = backend::Backend::start().await;
    let token = backend::token("acme", "responder");

    let mut startup = Vec::with_capacity(RUNS);
    let mut idle_rss = Vec::with_capacity(RUNS);
    let mut busy_rss = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut child = Command::new(BINARY)
            .env("DEMO_API_URL", &backend.url)
            .env("DEMO_API_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
        let mut session = Session::new(&mut child)?;
        session
            .send(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}))
            .await?;
        session
            .send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await?;
        session
            .send(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
            .await?;
        let tools = session.answer(2).await?;
        startup.push(started.elapsed());
        anyhow::ensure!(
            tools["result"]["tools"]
                .as_array()
                .is_some_and(|tools| tools.len() == 11),
            "{tools}"
        );

        tokio::time::sleep(Duration::from_secs(1)).await;
        idle_rss.push(vm_rss_kib(pid)?);
        session
            .send(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"find_services","arguments":{}}}))
            .await?;
        session.answer(3).await?;
        busy_rss.push(vm_rss_kib(pid)?);
        drop(session);
        child.stdin.take();
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await??;
    }

    startup.sort();
    idle_rss.sort_unstable();
    busy_rss.sort_unstable();
    let median = |values: &[Duration]| values[values.len() / 2];
    println!("external-mcp release binary over stdio, {RUNS} runs:");
    println!(
        "  time to first tools/list: median {:.1} ms (min {:.1} ms, max {:.1} ms)",
        median(&startup).as_secs_f64() * 1000.0,
        startup[0].as_secs_f64() * 1000.0,
        startup[RUNS - 1].as_secs_f64() * 1000.0
    );
    println!(
        "  idle RSS: median {:.1} MiB (min {:.1}, max {:.1})",
        idle_rss[RUNS / 2] as f64 / 1024.0,
        idle_rss[0] as f64 / 1024.0,
        idle_rss[RUNS - 1] as f64 / 1024.0
    );
    println!(
        "  RSS after one find_services call: median {:.1} MiB",
        busy_rss[RUNS / 2] as f64 / 1024.0
    );
    Ok(())
}

/// JSON-RPC lines to and from a child's stdin and stdout.
struct Session<'a> {
    input: &'a mut tokio::process::ChildStdin,
    output: tokio::io::Lines<BufReader<&'a mut tokio::process::ChildStdout>>,
}

impl<'a> Session<'a> {
    fn new(child: &'a mut Child) -> anyhow::Result<Self> {
        let input = child
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let output = child
            .stdout
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        Ok(Self {
            input,
            output: BufReader::new(output).lines(),
        })
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.input
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        self.input.flush().await?;
        Ok(())
    }

    async fn answer(&mut self, id: i64) -> anyhow::Result<Value> {
        let wait = async {
            while let Some(line) = self.output.next_line().await? {
                let message: Value = serde_json::from_str(&line)?;
                if message["id"].as_i64() == Some(id) {
                    return Ok(message);
                }
            }
            anyhow::bail!("stdout closed before answer {id}")
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await?
    }
}

/// The resident set size of a process, in KiB.
fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}
