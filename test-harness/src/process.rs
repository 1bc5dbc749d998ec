//! The workspace's binaries as child processes of a test: built once per test process, killed
//! when the test drops them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The path of the binary named like its package, built (debug profile) on first use, so a test
/// runs the same executable an operator would.
pub fn binary(package: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, path)) = built.iter().find(|(name, _)| name == package) {
        return path.clone();
    }
    let path = build(package).unwrap_or_else(|error| panic!("cannot build {package}: {error:#}"));
    built.push((package.to_owned(), path.clone()));
    path
}

fn build(package: &str) -> anyhow::Result<PathBuf> {
    // Cargo sets CARGO for the processes it runs; fall back to the one on PATH.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "-p",
            package,
            "--bin",
            package,
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build failed");
    }
    String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .context("cargo reported no executable")
}

/// Runs a binary to completion and returns its stdout; fails with its stderr.
pub async fn run(
    program: &PathBuf,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "{} {args:?} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Starts a long-running binary; it is killed when the returned child is dropped.
pub fn spawn(program: &PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()))
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers 200, for at most `timeout`.
pub async fn wait_until_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} did not become ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
