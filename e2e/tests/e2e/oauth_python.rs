//! Acceptance of the OAuth path with the official MCP Python SDK's OAuth client: the real
//! demo-backend (authorization server and API) and external-mcp (resource server) binaries,
//! and `tests/python/oauth_client.py` as a child process (see that script for what it does).
//! The Python environment comes from `ops/python-venv.sh`, which `ops/test` runs first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use demo_backend::domain::tokens;
use serde_json::Value;
use test_harness::backend::{self, Backend};
use test_harness::process::{binary, free_port, spawn, wait_until_ready};

/// The venv's python, as `ops/python-venv.sh` makes it.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("DEMO_PYTHON_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/dual-mcp/venv"))
        })?;
    let python = venv.join("bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import mcp.client.auth, httpx"])
        .output()
        .is_ok_and(|output| output.status.success());
    has_sdk.then_some(python)
}

/// external-mcp over HTTP on `listen`, a confidential client of the API's authorization server
/// with the secret in `secret_file`.
fn external_mcp_arguments(listen: &str, api_url: &str, secret_file: &Path) -> Vec<String> {
    [
        "--transport",
        "http",
        "--listen",
        listen,
        "--api-url",
        api_url,
        "--oauth-client-id",
        "external-mcp",
        "--oauth-client-secret-file",
        secret_file.to_str().expect("a UTF-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn the_python_sdk_oauth_client_connects_from_scratch() {
    let Some(python) = python() else {
        panic!("the MCP Python SDK venv is missing: run ops/python-venv.sh (ops/test does)");
    };

    let mcp_port = free_port();
    let mcp_base = format!("http://127.0.0.1:{mcp_port}");
    let secret = "e2e-external-mcp-client-secret-0123456789";
    let directory =
        std::env::temp_dir().join(format!("e2e-oauth-{}-{mcp_port}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let clients_file = directory.join("oauth-clients.json");
    let digest: String = tokens::hash(secret)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    std::fs::write(
        &clients_file,
        serde_json::json!([{
            "client_id": "external-mcp",
            "client_name": "Demo Monitoring MCP server",
            "client_secret_sha256": digest,
            "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
            "resources_served": [format!("{mcp_base}/mcp")],
        }])
        .to_string(),
    )
    .unwrap();
    let secret_file = directory.join("external-mcp-secret");
    std::fs::write(&secret_file, secret).unwrap();
    // A throwaway CA for the HTTPS server of the client metadata documents.
    let python_folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let made = std::process::Command::new(&python)
        .arg(python_folder.join("test_ca.py"))
        .arg(&directory)
        .output()
        .expect("python runs");
    assert!(
        made.status.success(),
        "test_ca.py: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let backend = Backend::start_with(&[
        "--oauth-clients-file",
        clients_file.to_str().unwrap(),
        "--oauth-client-documents-ca-file",
        directory.join("ca.pem").to_str().unwrap(),
        "--oauth-client-documents-allow-private-addresses",
    ])
    .await;
    let listen = format!("127.0.0.1:{mcp_port}");

    // Fail closed: with credentials the authorization server refuses, external-mcp does not
    // start (rather than serving with every OAuth token refused).
    let wrong_secret_file = directory.join("wrong-secret");
    std::fs::write(&wrong_secret_file, "not-the-secret-of-external-mcp").unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary("external-mcp"))
            .args(external_mcp_arguments(
                &listen,
                &backend.url,
                &wrong_secret_file,
            ))
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("external-mcp with wrong credentials exits at once")
    .unwrap();
    let refused_stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused_stderr}");
    assert!(
        refused_stderr.contains("does not accept this server")
            && refused_stderr.contains("HTTP 401"),
        "{refused_stderr}"
    );
    let arguments = external_mcp_arguments(&listen, &backend.url, &secret_file);
    let _external_mcp = spawn(
        &binary("external-mcp"),
        &arguments.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("RUST_LOG", "warn")],
    );
    wait_until_ready(&format!("{mcp_base}/healthz"), Duration::from_secs(60))
        .await
        .expect("external-mcp starts");

    let output = tokio::process::Command::new(&python)
        .arg(python_folder.join("oauth_client.py"))
        .env("DOCUMENT_CERT", directory.join("server.pem"))
        .env("DOCUMENT_KEY", directory.join("server.key"))
        .env("MCP_URL", format!("{mcp_base}/mcp"))
        .env("API_URL", &backend.url)
        .env("USER_ORGANIZATION", "acme")
        .env("USER_EMAIL", backend::email("acme", "responder"))
        .env("USER_PASSWORD", backend::password("acme", "responder"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    std::fs::remove_dir_all(&directory).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed:\n{stderr}\n{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{error}: {stdout}\n{stderr}"));

    // Discovery, registration and the token's binding.
    assert!(
        report["registered_client_id"]
            .as_str()
            .unwrap()
            .starts_with("dmoc_"),
        "{report}"
    );
    assert_eq!(
        report["requested_resource"],
        format!("{mcp_base}/mcp"),
        "{report}"
    );
    assert_eq!(
        report["requested_scope"], "read write",
        "the scope of the challenge: {report}"
    );
    assert_eq!(
        report["granted_scope"], "read",
        "the user granted less: {report}"
    );
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"list_incidents") && tools.contains(&"find_services"),
        "{report}"
    );
    assert!(
        !tools.contains(&"resolve_incident"),
        "no write tools under a read grant: {report}"
    );
    assert_eq!(report["read_tool_is_error"], false, "{report}");
    assert_eq!(
        report["api_with_mcp_token_status"], 401,
        "the API refuses external-mcp's token: {report}"
    );

    // Step-up.
    assert_eq!(report["write_with_read_grant_status"], 403, "{report}");
    let challenge = report["write_with_read_grant_challenge"].as_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains("resource_metadata="),
        "{challenge}"
    );
    assert_eq!(report["step_up_authorizations"], 1, "{report}");
    assert!(
        report["step_up_scope"].as_str().unwrap().contains("write"),
        "{report}"
    );
    assert_eq!(report["scope_after_step_up"], "read write", "{report}");
    assert!(
        report["write_after_step_up_text"]
            .as_str()
            .unwrap()
            .contains("INC-99999"),
        "{report}"
    );

    // Rotation, reuse detection, revocation.
    assert_eq!(report["rotated"], true, "{report}");
    assert_eq!(report["new_access_status"], 200, "{report}");
    assert_eq!(report["reused_refresh_status"], 400, "{report}");
    assert_eq!(report["reused_refresh_error"], "invalid_grant", "{report}");
    assert_eq!(report["family_access_after_reuse_status"], 401, "{report}");
    assert_eq!(report["earlier_access_after_reuse_status"], 401, "{report}");
    assert_eq!(
        report["family_refresh_after_reuse_error"], "invalid_grant",
        "{report}"
    );
    assert_eq!(report["before_revocation_status"], 200, "{report}");
    assert_eq!(report["revocation_status"], 200, "{report}");
    assert_eq!(report["after_revocation_status"], 401, "{report}");
    assert!(
        report["after_revocation_challenge"]
            .as_str()
            .unwrap()
            .contains("invalid_token"),
        "{report}"
    );

    // The client identified by its metadata document: its URL is its id, the document was
    // fetched once (authorization, token and refresh requests share the cached copy).
    assert_eq!(
        report["document_client_id"], report["document_url"],
        "{report}"
    );
    assert_eq!(
        report["document_authorize_client_id"], report["document_url"],
        "{report}"
    );
    assert_eq!(report["document_read_tool_is_error"], false, "{report}");
    assert_eq!(report["document_refresh_status"], 200, "{report}");
    assert_eq!(report["document_fetches"], 1, "{report}");
    assert_eq!(report["document_fetches_after_refresh"], 1, "{report}");
    let hostile = report["hostile_documents"].as_object().unwrap();
    let refusal = |key: &str, reason: &str| {
        let answer = hostile
            .iter()
            .find(|(client_id, _)| client_id.ends_with(key))
            .map(|(_, answer)| answer)
            .unwrap_or_else(|| panic!("{key} was not tried: {report}"));
        assert_eq!(answer["status"], 400, "{key}: {answer}");
        let text = answer["text"].as_str().unwrap();
        assert!(
            text.contains(reason),
            "{key}: expected {reason:?} in {text}"
        );
        assert!(
            answer["seconds"].as_f64().unwrap() < 20.0,
            "{key} answered in bounded time: {answer}"
        );
    };
    refusal("/impostor.json", "own URL as client_id");
    refusal("/with-secret.json", "no client secret");
    refusal("/secret-method.json", "PKCE only");
    refusal(
        "/other-redirect.json",
        "redirect URI is not one the application registered",
    );
    refusal("/huge.json", "larger than 16384 bytes");
    refusal("/not-json.json", "not JSON");
    refusal("/redirect.json", "redirects are not followed");
    refusal("/slow.json", "no answer within 5 s");
    refusal("/missing.json", "404");
    refusal("/client.json?x=1", "no query");
    refusal("/a/../client.json", "canonical form");
    let plain_http = report["document_url"]
        .as_str()
        .unwrap()
        .replacen("https://", "http://", 1);
    refusal(&plain_http, "not registered here");

    println!(
        "full OAuth authorization with the Python SDK, discovery to first tool call: {:.0} ms (first client, DCR), {:.0} ms (second client, DCR), {:.0} ms (metadata document client)",
        report["authorization_seconds"].as_f64().unwrap() * 1000.0,
        report["second_authorization_seconds"].as_f64().unwrap() * 1000.0,
        report["document_authorization_seconds"].as_f64().unwrap() * 1000.0,
    );
}
