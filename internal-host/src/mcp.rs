//! The host's MCP client of internal-mcp, over Streamable HTTP with rmcp.
//!
//! A [`McpConnector`] opens one [`McpSession`] per piece of work (a turn, a confirmation), with a
//! freshly minted credential for the acting user and the turn's correlation id in an
//! `X-Correlation-Id` header. Every request is bounded by a timeout; a call that times out or
//! whose future is dropped (the Stop button) is cancelled, and rmcp then sends the server
//! `notifications/cancelled`. Tool errors (`isError`) are results the model reads; transport
//! failures are [`Error::McpTransport`], shown apart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::McpLimits;
use crate::credentials::{ActingUser, CredentialMinter};
use crate::error::Error;

/// The header that carries a turn's correlation id to the server.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Opens sessions with one MCP server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct McpConnector {
    /// The server's name, as tools are namespaced and traces show it.
    pub server: String,
    url: String,
    minter: CredentialMinter,
    limits: McpLimits,
}

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
    pub fn new(server: &str, url: &str, minter: CredentialMinter, limits: McpLimits) -> Self {
        Self {
            server: server.to_owned(),
            url: url.to_owned(),
            minter,
            limits,
        }
    }

    /// A session acting for `user`, tagged with `correlation_id`.
    pub async fn connect(
        &self,
        user: &ActingUser,
        correlation_id: Uuid,
    ) -> Result<McpSession, Error> {
        let credential = self.minter.mint(user, correlation_id)?;
        let correlation = HeaderValue::from_str(&correlation_id.to_string())
            .map_err(|error| self.transport_error(error))?;
        let headers = HashMap::from([(HeaderName::from_static(CORRELATION_HEADER), correlation)]);
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(self.url.as_str())
                .auth_header(credential)
                .custom_headers(headers),
        );
        let service = tokio::time::timeout(self.limits.call_timeout, ().serve(transport))
            .await
            .map_err(|_| self.transport_error("timed out while connecting"))?
            .map_err(|error| self.transport_error(error))?;
        Ok(McpSession {
            server: self.server.clone(),
            service,
            limits: self.limits,
        })
    }

    fn transport_error(&self, error: impl std::fmt::Display) -> Error {
        Error::McpTransport {
            server: self.server.clone(),
            message: error.to_string(),
        }
    }
}

impl McpSession {
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Every tool the server offers this user.
    pub async fn tools(&self) -> Result<Vec<ToolDescription>, Error> {
        let tools = tokio::time::timeout(self.limits.call_timeout, self.service.list_all_tools())
            .await
            .map_err(|_| self.transport_error("timed out listing tools"))?
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

fn describe(tool: &Tool) -> ToolDescription {
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
