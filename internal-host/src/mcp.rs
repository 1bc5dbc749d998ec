//! The host's MCP client, with rmcp: internal-mcp over Streamable HTTP, and any other configured
//! server over Streamable HTTP or stdio (see [`crate::servers`]).
//!
//! A [`McpConnector`] opens one [`McpSession`] per piece of work (a turn, a confirmation): for
//! internal-mcp with a freshly minted credential for the acting user, for other servers with their
//! configured headers or as a fresh child process; always with the turn's correlation id (in an
//! `X-Correlation-Id` header over HTTP). Every request is bounded by a timeout (connecting and
//! listing tools by a shorter one than calls); a call that times out or whose future is dropped
//! (the Stop button) is cancelled, and rmcp then sends the server `notifications/cancelled`. Tool
//! errors (`isError`) are results the model reads; transport failures are
//! [`Error::McpTransport`], shown apart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::McpLimits;
use crate::credentials::{ActingUser, CredentialMinter};
use crate::error::Error;
use crate::servers::{Audience, Secret, ServerConfig, ServerTransport};

/// The header that carries a turn's correlation id to the server.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Opens sessions with one MCP server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct McpConnector {
    /// The server's name, as tools are namespaced and traces show it.
    pub server: String,
    transport: ServerTransport,
    /// Mints the acting user's credential for [`ServerTransport::Internal`].
    minter: CredentialMinter,
    audience: Audience,
    limits: McpLimits,
}

/// What a stdio server inherits from the host's environment; everything else it gets is
/// configured (so the host's keys and database URL never reach it).
const INHERITED_ENVIRONMENT: [&str; 2] = ["PATH", "HOME"];
/// Lines a stdio server writes to its stderr are logged cut to this many characters.
const MAX_STDERR_LINE: usize = 500;

/// An initialised connection, acting for one user.
pub struct McpSession {
    server: String,
    service: RunningService<RoleClient, ()>,
    limits: McpLimits,
}

/// The `_meta` key under which a server hands the host a confirmation token (internal-mcp's
/// `operations::CONFIRMATION_META_KEY`): `{"token", "expires_at", "tool"}`. Only `_meta`: a token
/// anywhere a model reads is not one the host will use.
pub const CONFIRMATION_META_KEY: &str = "dual-mcp/confirmation";

/// A confirmation a server issued for a planned change.
#[derive(Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub token: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Confirmation")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A tool as the host describes it to the model and the policy.
#[derive(Debug, Clone)]
pub struct ToolDescription {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    /// Annotated read-only and not destructive: runs without asking the user.
    pub read_only: bool,
    /// The capability group the server puts the tool in (its `_meta["dual-mcp/group"]`), if any.
    pub group: Option<ToolGroup>,
}

/// A capability group of a server's tools (a "skill"), as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolGroup {
    pub name: String,
    pub description: String,
    /// How to use the group's tools well, for a model that activated it (empty when the server
    /// gives none).
    pub instructions: String,
}

/// What a tool call returned, capped for the model's context.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    /// The server's `isError`: the tool refused or failed, and says why in `text`.
    pub is_error: bool,
    /// The text content, cut to the result cap.
    pub text: String,
    /// True when `text` was cut.
    pub truncated: bool,
    /// The full text's length in characters.
    pub full_chars: usize,
    pub structured: Option<Value>,
    /// The result's `_meta`, where a server puts what the model must not read.
    pub meta: Option<Value>,
    pub duration: Duration,
}

impl ToolOutcome {
    /// The confirmation the server put in the result's `_meta`, if any.
    pub fn confirmation(&self) -> Option<Confirmation> {
        let confirmation = self.meta.as_ref()?.get(CONFIRMATION_META_KEY)?;
        let token = confirmation.get("token")?.as_str()?.to_owned();
        let expires_at = confirmation
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&chrono::Utc));
        Some(Confirmation { token, expires_at })
    }
}

impl McpConnector {
    /// internal-mcp at `url`, every session with a credential `minter` mints for its user.
    pub fn new(server: &str, url: &str, minter: CredentialMinter, limits: McpLimits) -> Self {
        Self {
            server: server.to_owned(),
            transport: ServerTransport::Internal {
                url: url.to_owned(),
            },
            minter,
            audience: Audience::Everyone,
            limits,
        }
    }

    /// A connector for the configured server `config`, minting internal credentials with this
    /// connector's minter and, unless the server sets its own timeout, with its limits.
    pub fn for_server(&self, config: &ServerConfig) -> Self {
        Self {
            server: config.name.clone(),
            transport: config.transport.clone(),
            minter: self.minter.clone(),
            audience: config.audience.clone(),
            limits: McpLimits {
                call_timeout: config.timeout.unwrap_or(self.limits.call_timeout),
                ..self.limits
            },
        }
    }

    /// True when `user` may use this server's tools (a fixed-credential server is bound to the
    /// users its configuration names).
    pub fn admits(&self, user: &ActingUser) -> bool {
        self.audience.admits(user)
    }

    /// A session acting for `user`, tagged with `correlation_id`.
    pub async fn connect(
        &self,
        user: &ActingUser,
        correlation_id: Uuid,
    ) -> Result<McpSession, Error> {
        if !self.admits(user) {
            return Err(self.transport_error("not offered to this user"));
        }
        // Boxed: rmcp's handshake futures are large, and every caller would carry them inline.
        let connecting = Box::pin(async {
            match &self.transport {
                ServerTransport::Internal { url } => {
                    let credential = self.minter.mint(user, correlation_id)?;
                    let headers = self.http_headers(correlation_id, &[])?;
                    self.serve_http(url, Some(credential), headers).await
                }
                ServerTransport::Http { url, headers } => {
                    let headers = self.http_headers(correlation_id, headers)?;
                    self.serve_http(url, None, headers).await
                }
                ServerTransport::Stdio {
                    command,
                    args,
                    env,
                    cwd,
                } => {
                    let transport = self.spawn(command, args, env, cwd.as_deref())?;
                    ().serve(transport)
                        .await
                        .map_err(|error| self.transport_error(error))
                }
            }
        });
        let service = tokio::time::timeout(self.limits.set_up_timeout(), connecting)
            .await
            .map_err(|_| {
                self.transport_error(format!(
                    "did not answer within {} s while connecting",
                    self.limits.set_up_timeout().as_secs_f64()
                ))
            })??;
        Ok(McpSession {
            server: self.server.clone(),
            service,
            limits: self.limits,
        })
    }

    /// Initialises a session over Streamable HTTP with `headers` and, for internal-mcp, the
    /// user's credential as the bearer token.
    async fn serve_http(
        &self,
        url: &str,
        credential: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<RunningService<RoleClient, ()>, Error> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
        if let Some(credential) = credential {
            config = config.auth_header(credential);
        }
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .map_err(|error| self.transport_error(error))
    }

    /// The correlation id and `configured` headers (a bad header is a transport error naming the
    /// header, never its value).
    fn http_headers(
        &self,
        correlation_id: Uuid,
        configured: &[(String, Secret)],
    ) -> Result<HashMap<HeaderName, HeaderValue>, Error> {
        let mut headers = HashMap::new();
        headers.insert(
            HeaderName::from_static(CORRELATION_HEADER),
            HeaderValue::from_str(&correlation_id.to_string())
                .map_err(|error| self.transport_error(error))?,
        );
        for (name, value) in configured {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.transport_error(format!("{name:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                self.transport_error(format!("the value of header {name} is not valid"))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }

    /// Starts a stdio server with only its configured environment; it dies with its session.
    fn spawn(
        &self,
        command: &str,
        args: &[String],
        env: &[(String, Secret)],
        cwd: Option<&std::path::Path>,
    ) -> Result<TokioChildProcess, Error> {
        let mut child = tokio::process::Command::new(command);
        child.args(args).env_clear().kill_on_drop(true);
        for name in INHERITED_ENVIRONMENT {
            if let Some(value) = std::env::var_os(name) {
                child.env(name, value);
            }
        }
        for (name, value) in env {
            child.env(name, value.expose());
        }
        if let Some(cwd) = cwd {
            child.current_dir(cwd);
        }
        let (transport, stderr) = TokioChildProcess::builder(child)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|error| self.transport_error(format!("cannot start {command}: {error}")))?;
        if let Some(stderr) = stderr {
            tokio::spawn(log_stderr(self.server.clone(), stderr));
        }
        Ok(transport)
    }

    fn transport_error(&self, error: impl std::fmt::Display) -> Error {
        Error::McpTransport {
            server: self.server.clone(),
            message: error.to_string(),
        }
    }
}

/// Logs what a stdio server writes to its stderr, line by line, until it exits. A line is cut at
/// [`MAX_STDERR_LINE`] characters and nothing longer than a few kilobytes is ever buffered, however
/// the server writes.
async fn log_stderr(server: String, mut stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncReadExt;
    const MAX_BUFFERED: usize = 4096;
    let mut buffered: Vec<u8> = Vec::with_capacity(MAX_BUFFERED);
    let mut chunk = [0u8; 1024];
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        buffered.extend_from_slice(&chunk[..read]);
        while let Some(end) = buffered.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffered.drain(..=end).collect();
            log_line(&server, &line);
        }
        if buffered.len() >= MAX_BUFFERED {
            log_line(&server, &buffered);
            buffered.clear();
        }
    }
    if !buffered.is_empty() {
        log_line(&server, &buffered);
    }
}

fn log_line(server: &str, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let (line, _) = cap_text(line.trim_end(), MAX_STDERR_LINE);
    if !line.is_empty() {
        tracing::info!(server = %server, "stdio server: {line}");
    }
}

impl McpSession {
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Every tool the server offers this user.
    pub async fn tools(&self) -> Result<Vec<ToolDescription>, Error> {
        let tools =
            tokio::time::timeout(self.limits.set_up_timeout(), self.service.list_all_tools())
                .await
                .map_err(|_| {
                    self.transport_error(format!(
                        "did not list its tools within {} s",
                        self.limits.set_up_timeout().as_secs_f64()
                    ))
                })?
                .map_err(|error| self.transport_error(error))?;
        Ok(tools.iter().map(describe).collect())
    }

    /// Calls `tool`. Dropping the returned future cancels the call on the server.
    pub async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<ToolOutcome, Error> {
        let started = Instant::now();
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result =
            tokio::time::timeout(self.limits.call_timeout, self.service.call_tool(request))
                .await
                .map_err(|_| {
                    self.transport_error(format!(
                        "{tool} took longer than {} s and was cancelled",
                        self.limits.call_timeout.as_secs_f64()
                    ))
                })?
                .map_err(|error| self.transport_error(error))?;
        Ok(outcome(
            &result,
            self.limits.max_result_chars,
            started.elapsed(),
        ))
    }

    /// Closes the session.
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }

    fn transport_error(&self, error: impl std::fmt::Display) -> Error {
        Error::McpTransport {
            server: self.server.clone(),
            message: error.to_string(),
        }
    }
}

pub(crate) fn describe(tool: &Tool) -> ToolDescription {
    let annotations = tool.annotations.as_ref();
    let read_only = annotations.and_then(|a| a.read_only_hint) == Some(true)
        && annotations.and_then(|a| a.destructive_hint) != Some(true);
    let group = tool
        .meta
        .as_ref()
        .and_then(|meta| meta.0.get(GROUP_META_KEY))
        .and_then(|group| {
            Some(ToolGroup {
                name: group.get("name")?.as_str()?.to_owned(),
                description: group.get("description")?.as_str()?.to_owned(),
                instructions: group
                    .get("instructions")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        });
    ToolDescription {
        name: tool.name.to_string(),
        description: tool.description.as_deref().unwrap_or_default().to_owned(),
        input_schema: Value::Object((*tool.input_schema).clone()),
        read_only,
        group,
    }
}

/// The tool `_meta` key of a capability group (internal-mcp's `server::GROUP_META_KEY`).
pub const GROUP_META_KEY: &str = "dual-mcp/group";

fn outcome(result: &CallToolResult, max_chars: usize, duration: Duration) -> ToolOutcome {
    let full: String = result
        .content
        .iter()
        .filter_map(|content| content.as_text().map(|text| text.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    let full_chars = full.chars().count();
    let (text, truncated) = cap_text(&full, max_chars);
    ToolOutcome {
        is_error: result.is_error == Some(true),
        text,
        truncated,
        full_chars,
        structured: result.structured_content.clone(),
        meta: result
            .meta
            .as_ref()
            .and_then(|meta| serde_json::to_value(meta).ok()),
        duration,
    }
}

/// `text` cut to `max_chars` characters (never inside a character), and whether it was cut.
pub fn cap_text(text: &str, max_chars: usize) -> (String, bool) {
    match text.char_indices().nth(max_chars) {
        Some((byte, _)) => (text[..byte].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(meta: Option<Value>, text: &str) -> ToolOutcome {
        ToolOutcome {
            is_error: false,
            text: text.to_owned(),
            truncated: false,
            full_chars: text.len(),
            structured: Some(serde_json::json!({"confirmation_token": "imc_in_content"})),
            meta,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn confirmations_are_read_from_meta_only() {
        let meta = serde_json::json!({CONFIRMATION_META_KEY: {"token": "imc_abc", "expires_at": "2026-12-02T05:00:00Z"}});
        let confirmation = outcome(Some(meta), "{}")
            .confirmation()
            .expect("a confirmation");
        assert_eq!(confirmation.token, "imc_abc");
        assert!(confirmation.expires_at.is_some());
        assert!(!format!("{confirmation:?}").contains("imc_abc"));
        let in_text = r#"{"confirmation_token": "imc_in_text"}"#;
        assert!(
            outcome(Some(serde_json::json!({"other": 1})), in_text)
                .confirmation()
                .is_none()
        );
        assert!(outcome(None, in_text).confirmation().is_none());
    }

    #[test]
    fn caps_count_characters_not_bytes() {
        assert_eq!(cap_text("héllo", 2), ("hé".to_owned(), true));
        assert_eq!(cap_text("héllo", 5), ("héllo".to_owned(), false));
        assert_eq!(cap_text("", 0), (String::new(), false));
    }
}
