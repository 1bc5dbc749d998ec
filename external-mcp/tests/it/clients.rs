//! MCP clients for the tests (in process, HTTP) and helpers to call tools and read results.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use external_mcp::config::{ApiOptions, HttpSettings, Settings, TokenSource, Toolset};
use external_mcp::tools::all_tools;
use external_mcp::{Shared, http, stdio};
use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use url::Url;

use crate::backend::{self, Backend};

pub type Client<H = ()> = RunningService<RoleClient, H>;

/// Records the progress notifications a server sends.
#[derive(Debug, Clone, Default)]
pub struct ProgressRecorder(pub Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl ClientHandler for ProgressRecorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(params);
    }
}

/// The settings the tests run with: everything on, short waits.
pub fn settings(api_url: &str) -> Settings {
    let api_url = Url::parse(api_url).expect("API URL");
    Settings {
        web_url: Url::parse("https://monitoring.example.com/").expect("web URL"),
        api_url,
        read_only: false,
        toolsets: Toolset::ALL.to_vec(),
        api: ApiOptions {
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            max_retry_wait: Duration::from_secs(5),
        },
    }
}

/// A token source with a fixed token.
pub fn fixed(token: &str) -> TokenSource {
    TokenSource::Fixed(Some(token.parse().expect("a token")))
}

/// An in-process server (the stdio code path over a pipe) and a client connected to it.
pub async fn in_process_with<H: ClientHandler>(
    handler: H,
    settings: Settings,
    token: TokenSource,
) -> Client<H> {
    let shared = Shared::new(settings).expect("shared state");
    let (client_side, server_side) = tokio::io::duplex(256 * 1024);
    let (server_read, server_write) = tokio::io::split(server_side);
    tokio::spawn(async move {
        if let Err(error) = stdio::serve_on(shared, token, server_read, server_write).await {
            eprintln!("in-process server ended: {error:#}");
        }
    });
    handler
        .serve(client_side)
        .await
        .expect("the client connects")
}

pub async fn in_process(settings: Settings, token: TokenSource) -> Client {
    in_process_with((), settings, token).await
}

/// An in-process client acting as the seeded `role` of `organization`.
pub async fn as_user(backend: &Backend, organization: &str, role: &str) -> Client {
    in_process(
        settings(&backend.url),
        fixed(&backend::token(organization, role)),
    )
    .await
}

/// The HTTP transport on a free port; returns its base URL. Stops when the test's runtime ends.
pub async fn http_server(api_url: &str) -> String {
    http_server_with(settings(api_url)).await
}

/// The HTTP transport with these launch settings on a free port; returns its base URL.
pub async fn http_server_with(launch: Settings) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let base = format!("http://{address}");
    let http_settings = HttpSettings {
        listen: address,
        public_url: Url::parse(&base).expect("public URL"),
        allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        oauth: None,
    };
    let shared = Shared::new(launch).expect("shared state");
    tokio::spawn(http::serve(
        listener,
        shared,
        http_settings,
        std::future::pending(),
    ));
    base
}

/// A Streamable HTTP client presenting `token` to `/mcp`.
pub async fn http_client(base: &str, token: &str) -> Client {
    http_client_at(&format!("{base}/mcp"), token).await
}

/// A Streamable HTTP client presenting `token` to the MCP endpoint at `url`.
pub async fn http_client_at(url: &str, token: &str) -> Client {
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("the HTTP client connects")
}

/// Calls `tool` with `arguments` (a JSON object); a protocol error fails the test.
pub async fn call<H: ClientHandler>(
    client: &Client<H>,
    tool: &str,
    arguments: Value,
) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool} failed at the protocol level: {error}"))
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|content| content.as_text())
        .map(|text| text.text.clone())
        .unwrap_or_default()
}

/// The structured content of a successful result.
pub fn ok(result: &CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "the tool failed: {}",
        text(result)
    );
    result
        .structured_content
        .clone()
        .expect("structuredContent")
}

/// Calls and returns the structured content, failing on any error or on structured content that
/// does not match the tool's `outputSchema`.
pub async fn ok_call<H: ClientHandler>(client: &Client<H>, tool: &str, arguments: Value) -> Value {
    let structured = ok(&call(client, tool, arguments).await);
    assert_conforms(tool, &structured);
    structured
}

/// Fails unless `structured` matches the `outputSchema` that `tool` advertises.
pub fn assert_conforms(tool: &str, structured: &Value) {
    let definition = all_tools()
        .into_iter()
        .find(|definition| definition.name == tool)
        .unwrap_or_else(|| panic!("no tool {tool}"));
    let schema = Value::Object(
        definition
            .output_schema
            .unwrap_or_else(|| panic!("{tool} has no outputSchema"))
            .as_ref()
            .clone(),
    );
    let violations = crate::schema::violations(&schema, structured);
    assert!(
        violations.is_empty(),
        "{tool}'s structuredContent breaks its outputSchema: {violations:#?}"
    );
}

/// Asserts a tool error whose text contains every one of `expected`; returns the text.
pub fn failed(result: &CallToolResult, expected: &[&str]) -> String {
    let message = text(result);
    assert_eq!(
        result.is_error,
        Some(true),
        "expected a tool error, got: {message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    message
}

/// The names of the tools a client sees.
pub async fn tool_names<H: ClientHandler>(client: &Client<H>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    names
}

/// The string values of `field` in each object of `items`.
pub fn strings(items: &Value, field: &str) -> Vec<String> {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
