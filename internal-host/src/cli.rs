//! The `internal-host` command line: `serve` runs the assistant. Secrets (the database URL, the
//! credential signing key) come from the environment or a file, never from a flag, and never
//! print; unknown flags and values are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use crate::app::{AppState, serve};
use crate::config::{Config, CredentialKey, McpLimits};
use crate::error::Error;

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
    Serve(ServeArguments),
}

/// The environment variable that may hold the credential signing key itself (the key internal-mcp
/// verifies with, so the same variable as internal-mcp's).
pub const SIGNING_KEY_ENV: &str = "INTERNAL_MCP_SIGNING_KEY";

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
    /// A file holding the HS256 key internal-mcp trusts (or set INTERNAL_MCP_SIGNING_KEY).
    #[arg(long, env = "INTERNAL_MCP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// An MCP call that takes longer is cancelled.
    #[arg(long, default_value_t = 30)]
    pub mcp_timeout_seconds: u64,
    /// Tool results longer than this many characters are cut before the model reads them.
    #[arg(long, default_value_t = McpLimits::DEFAULT.max_result_chars)]
    pub max_result_chars: usize,
}

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
        Command::Serve(arguments) => serve_command(arguments).await,
    }
}

async fn serve_command(arguments: ServeArguments) -> anyhow::Result<()> {
    let key = read_key(arguments.signing_key_file.as_deref())?;
    let mut config = Config::new(arguments.database_url.0, arguments.internal_mcp_url, key);
    config.mcp_limits.call_timeout = Duration::from_secs(arguments.mcp_timeout_seconds);
    config.mcp_limits.max_result_chars = arguments.max_result_chars;
    let state = AppState::connect(config).await?;
    let listener = tokio::net::TcpListener::bind(arguments.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "internal-host listening");
    serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// The key from the file or the environment, exactly one of the two.
fn read_key(file: Option<&std::path::Path>) -> Result<CredentialKey, Error> {
    let from_env = std::env::var_os(SIGNING_KEY_ENV);
    let bytes = match (file, from_env) {
        (Some(_), Some(_)) => {
            return Err(Error::Startup(format!(
                "give the signing key either in a file or in {SIGNING_KEY_ENV}, not both"
            )));
        }
        (Some(path), None) => {
            let mut bytes = std::fs::read(path).map_err(|error| {
                Error::Startup(format!("cannot read the signing key file: {error}"))
            })?;
            while bytes
                .last()
                .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
            {
                bytes.pop();
            }
            bytes
        }
        (None, Some(value)) => value.into_encoded_bytes(),
        (None, None) => {
            return Err(Error::Startup(format!(
                "no signing key: set {SIGNING_KEY_ENV} or INTERNAL_MCP_SIGNING_KEY_FILE"
            )));
        }
    };
    CredentialKey::new(bytes)
}
