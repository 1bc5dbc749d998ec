//! The `internal-host` command line: `serve` runs the assistant. Secrets (the database URL, the
//! credential signing key, the OAuth client secret) come from the environment or a file, never
//! from a flag, and never print; unknown flags and values are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, TurnLimits};
use crate::app::{AppState, serve};
use crate::config::{ClientSecret, Config, CredentialKey, McpLimits, SignInConfig};
use crate::error::Error;
use crate::investigations::{AgentIdentity, InvestigationConfig, SynthesisConfig, run_worker};
use crate::llm::LlmSettings;

#[derive(Debug, Parser)]
#[command(
    name = "internal-host",
    version,
    about = "The product's own AI assistant: an MCP host of internal-mcp."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the assistant over HTTP (applies the host's pending migrations first).
    Serve(Box<ServeArguments>),
    /// Print the SQL an administrator runs once to create the host's role and schema, with the
    /// role's password taken from INTERNAL_HOST_DATABASE_PASSWORD (never a flag).
    BootstrapSql,
}

/// The environment variable that may hold the credential signing key itself (the key internal-mcp
/// verifies with, so the same variable as internal-mcp's).
pub const SIGNING_KEY_ENV: &str = "INTERNAL_MCP_SIGNING_KEY";
/// The environment variable that may hold the OAuth client secret itself.
pub const CLIENT_SECRET_ENV: &str = "INTERNAL_HOST_OAUTH_CLIENT_SECRET";

#[derive(Debug, Args)]
pub struct ServeArguments {
    /// The address to listen on; loopback by default.
    #[arg(long, env = "INTERNAL_HOST_LISTEN", default_value = "127.0.0.1:8092")]
    pub listen: SocketAddr,
    /// The host's own login (role `internal_host`), e.g. postgres://internal_host:...@host/db.
    #[arg(long, env = "INTERNAL_HOST_DATABASE_URL", hide_env_values = true, value_parser = parse_secret_url)]
    pub database_url: SecretUrl,
    /// internal-mcp's unified endpoint.
    #[arg(
        long,
        env = "INTERNAL_HOST_INTERNAL_MCP_URL",
        default_value = "http://127.0.0.1:8091/mcp"
    )]
    pub internal_mcp_url: String,
    /// The assistant's MCP servers, a JSON file in the `mcpServers` convention (see the README);
    /// without it the assistant uses internal-mcp at --internal-mcp-url. AgenticOps always uses
    /// --internal-mcp-url.
    #[arg(long, env = "INTERNAL_HOST_MCP_SERVERS")]
    pub mcp_servers: Option<PathBuf>,
    /// The host's Ed25519 private key (PKCS#8 PEM, as `internal-mcp keygen` writes it), whose
    /// public half internal-mcp holds under --key-id: internal-mcp then cannot mint credentials.
    #[arg(
        long,
        env = "INTERNAL_HOST_PRIVATE_KEY_FILE",
        requires = "key_id",
        conflicts_with = "signing_key_file"
    )]
    pub private_key_file: Option<PathBuf>,
    /// The `kid` internal-mcp's key set publishes the private key's public half under.
    #[arg(long, env = "INTERNAL_HOST_KEY_ID")]
    pub key_id: Option<String>,
    /// Instead of a private key: a file holding the HS256 key internal-mcp trusts (or set
    /// INTERNAL_MCP_SIGNING_KEY).
    #[arg(long, env = "INTERNAL_MCP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// An MCP call that takes longer is cancelled.
    #[arg(long, default_value_t = 30)]
    pub mcp_timeout_seconds: u64,
    /// Connecting to an MCP server, and listing its tools, each get this long; a server slower
    /// than that is left out of the turn with a notice.
    #[arg(
        long,
        env = "INTERNAL_HOST_MCP_CONNECT_TIMEOUT_SECONDS",
        default_value_t = McpLimits::DEFAULT.connect_timeout.as_secs()
    )]
    pub mcp_connect_timeout_seconds: u64,
    /// Tool results longer than this many characters are cut before the model reads them.
    #[arg(long, default_value_t = McpLimits::DEFAULT.max_result_chars)]
    pub max_result_chars: usize,
    /// The URL browsers use to reach the host (cookies are Secure when it is https; the OAuth
    /// redirect URI is `<public url>/auth/callback`).
    #[arg(
        long,
        env = "INTERNAL_HOST_PUBLIC_URL",
        default_value = "http://127.0.0.1:8092"
    )]
    pub public_url: String,
    /// The product's OAuth authorization server (demo-backend's base URL).
    #[arg(
        long,
        env = "INTERNAL_HOST_OAUTH_ISSUER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub oauth_issuer: String,
    /// The host's client id at the authorization server.
    #[arg(
        long,
        env = "INTERNAL_HOST_OAUTH_CLIENT_ID",
        default_value = "internal-host"
    )]
    pub oauth_client_id: String,
    /// A file holding the OAuth client secret (or set INTERNAL_HOST_OAUTH_CLIENT_SECRET).
    #[arg(long, env = "INTERNAL_HOST_OAUTH_CLIENT_SECRET_FILE")]
    pub oauth_client_secret_file: Option<PathBuf>,
    /// How long start-up waits for the authorization server's metadata before giving up.
    #[arg(long, default_value_t = 30)]
    pub oauth_discovery_seconds: u64,
    /// Sessions end this many hours after sign-in.
    #[arg(long, env = "INTERNAL_HOST_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u64,
    /// The language model that answers; with none configured, questions get a notice saying so.
    #[command(flatten)]
    pub llm: LlmSettings,
    /// Show the model an index of capability groups and offer a group's tools only once it asks
    /// for them (fewer tokens per model call). Default: on for a hosted model, off for a local
    /// one (the small offline model activates groups over and over instead of calling a tool).
    #[arg(long, env = "INTERNAL_HOST_SKILLS", action = clap::ArgAction::Set)]
    pub skills: Option<bool>,
    /// AgenticOps: the service user each organisation's investigations act as, as
    /// `<organization id>:<user id>` pairs separated by commas. Empty: no investigations.
    #[arg(long, env = "INTERNAL_HOST_AGENTS", default_value = "")]
    pub agents: String,
    /// AgenticOps: where discovery starts for an organisation seen for the first time, RFC 3339
    /// (default: 15 minutes ago). An earlier time investigates the incidents opened since.
    #[arg(long, env = "INTERNAL_HOST_INVESTIGATE_SINCE")]
    pub investigate_since: Option<chrono::DateTime<chrono::Utc>>,
    /// AgenticOps: let the language model add cited claims to each report (within a per-run and
    /// a daily budget); false: reports are the playbook's alone. Default: true for a hosted
    /// model, false for a local one (the small offline model needs more than the 120 s a run
    /// allows it on two cores, and its claims rarely cite a step; see the investigations bench).
    #[arg(long, env = "INTERNAL_HOST_INVESTIGATION_SYNTHESIS", action = clap::ArgAction::Set)]
    pub investigation_synthesis: Option<bool>,
}

/// The environment variable `bootstrap-sql` reads the host role's password from.
pub const BOOTSTRAP_PASSWORD_ENV: &str = "INTERNAL_HOST_DATABASE_PASSWORD";

/// A database URL that never prints.
#[derive(Clone)]
pub struct SecretUrl(PgConnectOptions);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretUrl(..)")
    }
}

fn parse_secret_url(value: &str) -> Result<SecretUrl, String> {
    // The parser's own message could quote the URL, password included: say only what is wrong.
    PgConnectOptions::from_str(value)
        .map(SecretUrl)
        .map_err(|_| "not a valid postgres:// URL".to_owned())
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(arguments) => serve_command(*arguments).await,
        Command::BootstrapSql => {
            let password = std::env::var(BOOTSTRAP_PASSWORD_ENV).map_err(|_| {
                Error::Startup(format!(
                    "set {BOOTSTRAP_PASSWORD_ENV} to the host role's password"
                ))
            })?;
            println!("{}", crate::database::bootstrap_sql(&password)?);
            Ok(())
        }
    }
}

async fn serve_command(arguments: ServeArguments) -> anyhow::Result<()> {
    let key = match (&arguments.private_key_file, &arguments.key_id) {
        (Some(file), Some(kid)) => read_private_key(file, kid)?,
        _ => read_key(arguments.signing_key_file.as_deref())?,
    };
    let mut config = Config::new(arguments.database_url.0, arguments.internal_mcp_url, key);
    config.mcp_limits.call_timeout = Duration::from_secs(arguments.mcp_timeout_seconds);
    config.mcp_limits.connect_timeout = Duration::from_secs(arguments.mcp_connect_timeout_seconds);
    config.mcp_limits.max_result_chars = arguments.max_result_chars;
    config.web.public_url = arguments.public_url.trim_end_matches('/').to_owned();
    config.web.session_lifetime = Duration::from_secs(arguments.session_hours.saturating_mul(3600));
    config.web.sign_in = Some(SignInConfig {
        issuer: arguments.oauth_issuer.trim_end_matches('/').to_owned(),
        client_id: arguments.oauth_client_id,
        client_secret: ClientSecret::new(read_secret_text(
            arguments.oauth_client_secret_file.as_deref(),
            CLIENT_SECRET_ENV,
            "the OAuth client secret",
        )?),
        discovery_timeout: Duration::from_secs(arguments.oauth_discovery_seconds),
    });
    let servers = arguments
        .mcp_servers
        .as_deref()
        .map(crate::servers::load)
        .transpose()?;
    let mut state = AppState::connect(config).await?;
    let provider = if arguments.llm.is_configured() {
        Some(arguments.llm.build()?)
    } else {
        None
    };
    if let Some(provider) = provider.clone() {
        let limits = TurnLimits::default();
        limits.validate()?;
        let skills = arguments.skills.unwrap_or(!provider.model().local);
        let mut agent = Agent::new(
            provider,
            state.internal_mcp().clone(),
            state.database().clone(),
            limits,
        )
        .with_skills(skills);
        if let Some(servers) = &servers {
            let connectors = servers
                .iter()
                .map(|server| state.internal_mcp().for_server(server))
                .collect();
            agent = agent
                .with_servers(connectors)
                .with_policies(crate::servers::policies(servers));
            let names: Vec<&str> = servers.iter().map(|server| server.name.as_str()).collect();
            tracing::info!(servers = ?names, "the assistant's MCP servers");
        }
        tracing::info!(model = %agent.model().name, provider = %agent.model().provider, "the assistant answers with this model");
        state = state.with_turns(Arc::new(agent));
    } else {
        tracing::warn!(
            "no language model is configured (INTERNAL_HOST_LLM_MODEL); questions get a notice saying so"
        );
    }
    let agents = AgentIdentity::parse_list(&arguments.agents)?;
    let stop = CancellationToken::new();
    let worker = if agents.is_empty() {
        tracing::info!("AgenticOps is off: no agent identities (INTERNAL_HOST_AGENTS)");
        None
    } else {
        let synthesis = provider
            .filter(|provider| {
                arguments
                    .investigation_synthesis
                    .unwrap_or(!provider.model().local)
            })
            .map(SynthesisConfig::new);
        tracing::info!(
            synthesis = synthesis.is_some(),
            "AgenticOps investigates new incidents"
        );
        let config = InvestigationConfig {
            discover_since: arguments.investigate_since,
            synthesis,
            ..InvestigationConfig::new(agents)
        };
        config.validate()?;
        let (state, stop) = (state.clone(), stop.clone());
        Some(tokio::spawn(async move {
            run_worker(&state, config, stop.cancelled_owned()).await
        }))
    };
    let listener = tokio::net::TcpListener::bind(arguments.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "internal-host listening");
    let shutdown = stop.clone();
    serve(listener, state, async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    })
    .await?;
    stop.cancel();
    if let Some(worker) = worker {
        worker.await??;
    }
    Ok(())
}

/// The host's Ed25519 private key, published to internal-mcp under `kid`.
fn read_private_key(file: &std::path::Path, kid: &str) -> Result<CredentialKey, Error> {
    let pem = std::fs::read_to_string(file)
        .map_err(|error| Error::Startup(format!("cannot read the private key file: {error}")))?;
    CredentialKey::ed25519_from_pem(kid, &pem)
}

/// The shared key from the file or the environment, exactly one of the two.
fn read_key(file: Option<&std::path::Path>) -> Result<CredentialKey, Error> {
    CredentialKey::new(read_secret(file, SIGNING_KEY_ENV, "the signing key")?)
}

/// A secret from a file (trailing newlines dropped) or the environment variable `env`, exactly
/// one of the two.
fn read_secret(file: Option<&std::path::Path>, env: &str, what: &str) -> Result<Vec<u8>, Error> {
    let from_env = std::env::var_os(env);
    match (file, from_env) {
        (Some(_), Some(_)) => Err(Error::Startup(format!(
            "give {what} either in a file or in {env}, not both"
        ))),
        (Some(path), None) => {
            let mut bytes = std::fs::read(path).map_err(|error| {
                Error::Startup(format!("cannot read the file of {what}: {error}"))
            })?;
            while bytes
                .last()
                .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
            {
                bytes.pop();
            }
            Ok(bytes)
        }
        (None, Some(value)) => Ok(value.into_encoded_bytes()),
        (None, None) => Err(Error::Startup(format!(
            "{what} is missing: set {env} or {env}_FILE"
        ))),
    }
}

fn read_secret_text(
    file: Option<&std::path::Path>,
    env: &str,
    what: &str,
) -> Result<String, Error> {
    String::from_utf8(read_secret(file, env, what)?)
        .map_err(|_| Error::Startup(format!("{what} is not UTF-8")))
}
