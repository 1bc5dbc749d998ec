//! The real `external-mcp` binary over stdio, as a desktop host runs it: only protocol on stdout,
//! a clean exit when the host closes stdin, and a wrong token explained by every tool.

use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::backend::{Backend, token};
use crate::clients::{call, failed, ok_call, tool_names};

const BINARY: &str = env!("CARGO_BIN_EXE_external-mcp");

#[tokio::test]
async fn stdout_carries_only_protocol_and_closing_stdin_ends_the_process_cleanly() {
    let backend = Backend::start().await;
    let mut child = Command::new(BINARY)
        .env("DEMO_API_URL", &backend.url)
        .env("DEMO_API_TOKEN", token("acme", "viewer"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut count = 0;
        while let Ok(Some(_)) = lines.next_line().await {
            count += 1;
        }
        count
    });

    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_incidents","arguments":{"status":"open"}}}),
    ];
    for message in &messages {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
    }
    stdin.flush().await.unwrap();

    let mut answered = Vec::new();
    let read_all = async {
        while let Ok(Some(line)) = stdout.next_line().await {
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not JSON-RPC on stdout: {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
            if let Some(id) = message["id"].as_i64() {
                answered.push((id, message));
                if answered.len() == 3 {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("three answers");
    let (_, tools) = answered
        .iter()
        .find(|(id, _)| *id == 2)
        .expect("tools/list answered");
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        7,
        "a viewer sees the read tools"
    );
    let (_, result) = answered
        .iter()
        .find(|(id, _)| *id == 3)
        .expect("tools/call answered");
    assert_eq!(
        result["result"]["structuredContent"]["incidents"][0]["title"],
        "Search results slow to load"
    );

    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits when stdin closes")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    assert!(
        stdout.next_line().await.unwrap().is_none(),
        "nothing after the answers"
    );
    assert!(logs.await.unwrap() > 0, "logs go to stderr");
}

#[tokio::test]
async fn through_rmcp_s_child_process_transport_the_binary_serves_and_explains_a_wrong_token() {
    let backend = Backend::start().await;
    let url = backend.url.clone();
    let viewer = token("acme", "viewer");
    let transport = TokioChildProcess::new(Command::new(BINARY).configure(|command| {
        command
            .env("DEMO_API_URL", &url)
            .env("DEMO_API_TOKEN", &viewer)
            .env("RUST_LOG", "warn");
    }))
    .expect("spawn");
    let client = ().serve(transport).await.expect("initialize");
    let services = ok_call(&client, "find_services", json!({ "query": "checkout" })).await;
    assert_eq!(services["services"][0]["name"], "checkout-api");
    client.cancel().await.expect("closed");

    let url = backend.url.clone();
    let transport = TokioChildProcess::new(Command::new(BINARY).configure(|command| {
        command
            .env("DEMO_API_URL", &url)
            .env("DEMO_API_TOKEN", "dmo_wrong")
            .env("RUST_LOG", "warn");
    }))
    .expect("spawn");
    let client = ().serve(transport).await.expect("the server starts despite the token");
    assert_eq!(tool_names(&client).await.len(), 11);
    let result = call(
        &client,
        "service_overview",
        json!({ "service": "checkout-api" }),
    )
    .await;
    failed(
        &result,
        &[&format!("your token was rejected by {}", backend.url)],
    );
    client.cancel().await.expect("closed");
}

#[tokio::test]
async fn unknown_flags_and_values_stop_the_binary_with_a_message() {
    for arguments in [
        &["--toolsets", "services,everything"][..],
        &["--transport", "carrier-pigeon"],
        &["--read-only=perhaps"],
        &["--bogus"],
    ] {
        let output = Command::new(BINARY)
            .args(arguments)
            .env("DEMO_API_URL", "http://127.0.0.1:9")
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{arguments:?} was accepted");
        assert!(output.stdout.is_empty(), "{arguments:?}: nothing on stdout");
        assert!(
            !output.stderr.is_empty(),
            "{arguments:?}: a message on stderr"
        );
    }
    let output = Command::new(BINARY)
        .args(["--transport", "http"])
        .env("DEMO_API_URL", "http://127.0.0.1:9")
        .env("DEMO_API_TOKEN", "dmo_x")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("every request carries"));
}
