//! The assistant's MCP servers, configured in the `mcpServers` convention of other MCP hosts (a
//! JSON file: `{"mcpServers": {"<name>": {...}}}`), validated before anything starts.
//!
//! Three kinds of entry:
//! - `{"url": ..., "credentials": "internal"}`: internal-mcp (its unified `/mcp` or a component
//!   endpoint), called with a credential minted per user and per turn, so every user acts as
//!   themselves and internal-mcp decides what each may do.
//! - `{"url": ..., "headers": {...}}`: any other server over Streamable HTTP, with fixed headers.
//! - `{"command": ..., "args": [...], "env": {...}}`: any server over stdio, started as a child
//!   process for each turn. Its environment is empty but for `PATH`, `HOME` and what the entry
//!   sets, so the host's own secrets never reach it.
//!
//! Header and environment values may name the host's environment as `${env:NAME}` (an unset name
//! stops the start), so a token need not be written in the file; values never print.
//!
//! A fixed-credential server (stdio, or HTTP with fixed headers) acts as one identity for whoever
//! uses it, so it must say whose it is: `"organization"` (required), and optionally `"users"` and
//! `"roles"`; only those users are offered its tools. `"policy"` (for the whole server) and
//! `"tools": {"<tool>": "allow" | "ask" | "deny"}` tighten the annotations' permissions, never
//! loosen them (see [`crate::agent::policy`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use crate::agent::tools::{HOST, SEPARATOR, qualified_name};
use crate::agent::{Permission, ToolPolicies};
use crate::credentials::ActingUser;
use crate::error::Error;

/// One configured server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `[a-z0-9-]{1,32}`: the namespace of its tools (`<name>__<tool>`).
    pub name: String,
    pub transport: ServerTransport,
    /// Who is offered its tools.
    pub audience: Audience,
    /// Overrides the host's MCP call timeout for this server.
    pub timeout: Option<Duration>,
    /// Tightens every tool of the server.
    pub policy: Option<Permission>,
    /// Tightens single tools, by the server's tool name.
    pub tools: BTreeMap<String, Permission>,
}

/// How the host reaches a server.
#[derive(Debug, Clone)]
pub enum ServerTransport {
    /// internal-mcp, with a credential minted for the acting user.
    Internal { url: String },
    /// Streamable HTTP with fixed headers.
    Http {
        url: String,
        headers: Vec<(String, Secret)>,
    },
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, Secret)>,
        cwd: Option<PathBuf>,
    },
}

/// Who may use a server's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every signed-in user, each as themselves (internal credentials).
    Everyone,
    /// The users of one organisation, optionally only some of them or some roles.
    Organization {
        id: Uuid,
        users: Vec<Uuid>,
        roles: Vec<String>,
    },
}

/// A configured value that must not print (a token in a header or the environment).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

impl Audience {
    /// True when `user` is offered the server's tools.
    pub fn admits(&self, user: &ActingUser) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::Organization { id, users, roles } => {
                *id == user.organization_id
                    && (users.is_empty() || users.contains(&user.user_id))
                    && (roles.is_empty() || roles.contains(&user.role))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "mcpServers")]
    mcp_servers: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
    credentials: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    organization: Option<Uuid>,
    #[serde(default)]
    users: Vec<Uuid>,
    #[serde(default)]
    roles: Vec<String>,
    timeout_seconds: Option<u64>,
    policy: Option<Permission>,
    #[serde(default)]
    tools: BTreeMap<String, Permission>,
    #[serde(default)]
    disabled: bool,
}

/// Parses and validates a `mcpServers` file; `environment` looks up `${env:NAME}`.
pub fn parse(
    text: &str,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ServerConfig>, Error> {
    let file: File = serde_json::from_str(text)
        .map_err(|error| Error::Startup(format!("the MCP servers file is not valid: {error}")))?;
    let mut servers = Vec::new();
    for (name, entry) in file.mcp_servers {
        if entry.disabled {
            continue;
        }
        let server = entry
            .into_server(&name, &environment)
            .map_err(|problem| Error::Startup(format!("MCP server {name:?}: {problem}")))?;
        servers.push(server);
    }
    if servers.is_empty() {
        return Err(Error::Startup(
            "the MCP servers file names no enabled server".into(),
        ));
    }
    Ok(servers)
}

/// Reads and parses a `mcpServers` file, expanding `${env:NAME}` from the process environment.
pub fn load(path: &std::path::Path) -> Result<Vec<ServerConfig>, Error> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::Startup(format!(
            "cannot read the MCP servers file {}: {error}",
            path.display()
        ))
    })?;
    parse(&text, |name| std::env::var(name).ok())
}

/// The permissions the servers' entries tighten.
pub fn policies(servers: &[ServerConfig]) -> ToolPolicies {
    servers
        .iter()
        .fold(ToolPolicies::from_annotations(), |policies, server| {
            let policies = match server.policy {
                Some(permission) => policies.tighten(&server.name, permission),
                None => policies,
            };
            server
                .tools
                .iter()
                .fold(policies, |policies, (tool, permission)| {
                    policies.tighten(&qualified_name(&server.name, tool), *permission)
                })
        })
}

impl Entry {
    fn into_server(
        self,
        name: &str,
        environment: &impl Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, String> {
        check_name(name)?;
        let transport = match (self.kind.as_deref(), &self.url, &self.command) {
            (Some("sse"), _, _) => {
                return Err(
                    "the legacy SSE transport is not supported; give the server's Streamable HTTP URL".into(),
                );
            }
            (Some(kind), _, _) if !matches!(kind, "stdio" | "http" | "streamable-http") => {
                return Err(format!(
                    "unknown type {kind:?} (stdio, http or streamable-http)"
                ));
            }
            (_, Some(_), Some(_)) => return Err("give either a url or a command, not both".into()),
            (_, None, None) => return Err("give a url (HTTP) or a command (stdio)".into()),
            (Some("stdio"), Some(_), None) => return Err("type stdio needs a command".into()),
            (Some("http" | "streamable-http"), None, Some(_)) => {
                return Err("type http needs a url".into());
            }
            (_, Some(url), None) => {
                check_url(url)?;
                if !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    return Err("args, env and cwd are for stdio servers".into());
                }
                match self.credentials.as_deref() {
                    Some("internal") if self.headers.is_empty() => {
                        ServerTransport::Internal { url: url.clone() }
                    }
                    Some("internal") => {
                        return Err(
                            "an internal-credentials server takes no headers: the host mints the credential".into(),
                        );
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown credentials {other:?} (the one kind is \"internal\")"
                        ));
                    }
                    None => ServerTransport::Http {
                        url: url.clone(),
                        headers: expand_all(&self.headers, environment, check_header_name)?,
                    },
                }
            }
            (_, None, Some(command)) => {
                if command.trim().is_empty() {
                    return Err("the command is empty".into());
                }
                if self.credentials.is_some() || !self.headers.is_empty() {
                    return Err("credentials and headers are for HTTP servers".into());
                }
                ServerTransport::Stdio {
                    command: command.clone(),
                    args: self.args.clone(),
                    env: expand_all(&self.env, environment, check_env_name)?,
                    cwd: self.cwd.clone(),
                }
            }
        };
        let audience = match (&transport, self.organization) {
            (ServerTransport::Internal { .. }, None)
                if self.users.is_empty() && self.roles.is_empty() =>
            {
                Audience::Everyone
            }
            (ServerTransport::Internal { .. }, _) => {
                return Err(
                    "an internal-credentials server serves every user as themselves; organization, users and roles are for fixed-credential servers".into(),
                );
            }
            (_, None) => {
                return Err(
                    "a server with fixed credentials acts as one identity for everyone who uses it: say whose it is with \"organization\" (and optionally \"users\" or \"roles\")".into(),
                );
            }
            (_, Some(id)) => {
                if let Some(role) = self
                    .roles
                    .iter()
                    .find(|role| !matches!(role.as_str(), "viewer" | "responder" | "admin"))
                {
                    return Err(format!(
                        "unknown role {role:?} (viewer, responder or admin)"
                    ));
                }
                Audience::Organization {
                    id,
                    users: self.users.clone(),
                    roles: self.roles.clone(),
                }
            }
        };
        let timeout = match self.timeout_seconds {
            None => None,
            Some(seconds @ 1..=600) => Some(Duration::from_secs(seconds)),
            Some(_) => return Err("timeout_seconds must be between 1 and 600".into()),
        };
        if let Some(tool) = self
            .tools
            .keys()
            .find(|tool| tool.is_empty() || tool.contains(SEPARATOR))
        {
            return Err(format!("{tool:?} is not a tool name"));
        }
        Ok(ServerConfig {
            name: name.to_owned(),
            transport,
            audience,
            timeout,
            policy: self.policy,
            tools: self.tools,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let well_formed = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-');
    if !well_formed || name.contains(SEPARATOR) {
        return Err(
            "a server's name is 1 to 32 of a-z, 0-9 and '-' (it namespaces its tools)".into(),
        );
    }
    if name == HOST {
        return Err(format!("{HOST:?} is the host's own namespace"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        _ => Err("the url must be an http:// or https:// URL".into()),
    }
}

fn check_header_name(name: &str) -> Result<(), String> {
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("{name:?} is not a header name"))
}

fn check_env_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(format!("{name:?} is not an environment variable name"))
    }
}

fn expand_all(
    values: &BTreeMap<String, String>,
    environment: &impl Fn(&str) -> Option<String>,
    check_key: fn(&str) -> Result<(), String>,
) -> Result<Vec<(String, Secret)>, String> {
    values
        .iter()
        .map(|(key, value)| {
            check_key(key)?;
            let expanded =
                expand(value, environment).map_err(|problem| format!("{key}: {problem}"))?;
            Ok((key.clone(), Secret(expanded.into())))
        })
        .collect()
}

/// `value` with every `${env:NAME}` replaced by the variable's value.
fn expand(value: &str, environment: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut expanded = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + "${env:".len()..];
        let Some(end) = after.find('}') else {
            return Err("an unclosed ${env:".into());
        };
        let name = &after[..end];
        check_env_name(name)?;
        let found = environment(name)
            .ok_or_else(|| format!("the environment variable {name} is not set"))?;
        expanded.push_str(&found);
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACME: &str = "7d1c6f0e-8a43-4c55-9a0e-3b6cbd1b0c11";

    fn environment(name: &str) -> Option<String> {
        (name == "DANA_TOKEN").then(|| "dmo_secret_value".to_owned())
    }

    fn parse_one(entry: &str) -> Result<ServerConfig, String> {
        parse(
            &format!(r#"{{"mcpServers": {{"one": {entry}}}}}"#),
            environment,
        )
        .map(|mut servers| servers.remove(0))
        .map_err(|error| error.to_string())
    }

    fn user(organization: &str, role: &str) -> ActingUser {
        ActingUser {
            user_id: Uuid::nil(),
            organization_id: organization.parse().unwrap(),
            role: role.to_owned(),
        }
    }

    #[test]
    fn the_three_kinds_parse_and_secrets_never_print() {
        let servers = parse(
            &format!(
                r#"{{"mcpServers": {{
                    "internal-mcp": {{"url": "http://127.0.0.1:8091/mcp", "credentials": "internal"}},
                    "external": {{"command": "external-mcp", "args": ["--quiet"],
                                  "env": {{"DEMO_API_TOKEN": "${{env:DANA_TOKEN}}"}},
                                  "organization": "{ACME}", "roles": ["responder"],
                                  "tools": {{"resolve_incident": "deny"}}, "timeout_seconds": 20}},
                    "status": {{"type": "http", "url": "https://status.example/mcp",
                                "headers": {{"Authorization": "Bearer ${{env:DANA_TOKEN}}"}},
                                "organization": "{ACME}", "policy": "ask"}},
                    "off": {{"command": "nothing", "disabled": true}}
                }}}}"#
            ),
            environment,
        )
        .unwrap();
        let names: Vec<&str> = servers.iter().map(|server| server.name.as_str()).collect();
        assert_eq!(names, ["external", "internal-mcp", "status"]);
        let ServerTransport::Stdio { env, args, .. } = &servers[0].transport else {
            panic!("external is a stdio server")
        };
        assert_eq!(args, &["--quiet"]);
        assert_eq!(env[0].1.expose(), "dmo_secret_value");
        assert_eq!(servers[0].timeout, Some(Duration::from_secs(20)));
        assert_eq!(servers[1].audience, Audience::Everyone);
        let ServerTransport::Http { headers, .. } = &servers[2].transport else {
            panic!("status is an HTTP server")
        };
        assert_eq!(headers[0].1.expose(), "Bearer dmo_secret_value");
        assert!(!format!("{servers:?}").contains("dmo_secret_value"));
    }

    #[test]
    fn fixed_credentials_are_offered_only_to_whom_they_belong() {
        let server = parse_one(&format!(
            r#"{{"command": "x", "organization": "{ACME}", "roles": ["responder", "admin"]}}"#
        ))
        .unwrap();
        assert!(server.audience.admits(&user(ACME, "responder")));
        assert!(!server.audience.admits(&user(ACME, "viewer")));
        assert!(
            !server
                .audience
                .admits(&user("00000000-0000-0000-0000-000000000001", "admin"))
        );
        let error =
            parse_one(r#"{"url": "http://a.example/mcp", "headers": {"X-Key": "k"}}"#).unwrap_err();
        assert!(error.contains("say whose it is"), "{error}");
        assert!(parse_one(r#"{"command": "x"}"#).is_err());
    }

    #[test]
    fn bad_entries_get_clear_errors() {
        for (entry, expected) in [
            (r#"{"url": "http://a/mcp", "command": "x"}"#, "not both"),
            (r#"{}"#, "give a url"),
            (r#"{"type": "sse", "url": "http://a/sse"}"#, "SSE"),
            (r#"{"type": "websocket", "url": "ws://a"}"#, "unknown type"),
            (
                r#"{"url": "ftp://a/mcp", "credentials": "internal"}"#,
                "http://",
            ),
            (
                r#"{"url": "http://a/mcp", "credentials": "oauth"}"#,
                "unknown credentials",
            ),
            (
                r#"{"url": "http://a/mcp", "credentials": "internal", "headers": {"A": "b"}}"#,
                "takes no headers",
            ),
            (
                r#"{"command": "x", "env": {"T": "${env:MISSING}"}, "organization": "7d1c6f0e-8a43-4c55-9a0e-3b6cbd1b0c11"}"#,
                "MISSING is not set",
            ),
            (
                r#"{"command": "x", "env": {"T": "${env:DANA_TOKEN"}, "organization": "7d1c6f0e-8a43-4c55-9a0e-3b6cbd1b0c11"}"#,
                "unclosed",
            ),
            (
                r#"{"url": "http://a/mcp", "credentials": "internal", "timeout_seconds": 0}"#,
                "timeout_seconds",
            ),
            (
                r#"{"url": "http://a/mcp", "credentials": "internal", "policy": "sometimes"}"#,
                "not valid",
            ),
            (
                r#"{"url": "http://a/mcp", "credentials": "internal", "surprise": 1}"#,
                "unknown field",
            ),
        ] {
            let error = parse_one(entry).unwrap_err();
            assert!(error.contains(expected), "{entry}: {error}");
        }
        for name in ["host", "a__b", "Upper", "", "-x", &"x".repeat(33)] {
            let file = format!(
                r#"{{"mcpServers": {{"{name}": {{"url": "http://a/mcp", "credentials": "internal"}}}}}}"#
            );
            assert!(parse(&file, environment).is_err(), "{name:?}");
        }
        assert!(parse(r#"{"mcpServers": {}}"#, environment).is_err());
        assert!(parse("not json", environment).is_err());
    }

    #[test]
    fn configured_permissions_only_tighten() {
        use crate::mcp::ToolDescription;
        let servers = parse(
            &format!(
                r#"{{"mcpServers": {{"ext": {{"command": "x", "organization": "{ACME}",
                     "tools": {{"get_incident": "deny", "add_incident_note": "allow"}}}}}}}}"#
            ),
            environment,
        )
        .unwrap();
        let policies = policies(&servers);
        let tool = |name: &str, read_only| ToolDescription {
            name: name.to_owned(),
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
            read_only,
            group: None,
        };
        assert_eq!(
            policies.permission("ext", &tool("get_incident", true)),
            Permission::Deny
        );
        assert_eq!(
            policies.permission("ext", &tool("add_incident_note", false)),
            Permission::Ask
        );
        assert_eq!(
            policies.permission("ext", &tool("list_incidents", true)),
            Permission::Allow
        );
    }
}
