//! The `internal-mcp` command line: `serve` runs the server, `token` mints a service credential
//! for manual testing and operators' debugging. Secrets (database URLs, the signing key) come from
//! the environment or a file and never print; unknown flags and values are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use demo_backend::domain::Secret;
use demo_backend::domain::kinds::Role;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::app::{AppState, serve};
use crate::auth::{CredentialRequest, mint_credential, mint_ed25519_credential};
use crate::config::{
    Config, CredentialPolicy, DEFAULT_TRUSTED_ISSUERS, Endpoint, Limits, MAX_CREDENTIAL_LIFETIME,
    SigningKey, TOKEN_COMMAND_ISSUER,
};
use crate::error::Error;
use crate::keys::{PrivateKey, PublicKeySet};

#[derive(Debug, Parser)]
#[command(
    name = "internal-mcp",
    version,
    about = "The product-internal MCP server: guarded, direct SQL access for the product's own assistant."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over streamable HTTP (applies pending migrations first).
    Serve(ServeArguments),
    /// Print a short-lived service credential for a user, for manual testing and debugging. The
    /// product's assistant mints its own; this is an operator's tool.
    Token(TokenArguments),
    /// Create an Ed25519 key pair for an internal caller: the private key goes to a new file
    /// (mode 0600), the public key is printed as a JWKS document for the server's key set.
    Keygen(KeygenArguments),
}

#[derive(Debug, Args)]
pub struct KeygenArguments {
    /// The key's id, as credentials will name it.
    #[arg(long)]
    pub kid: String,
    /// Where to write the private key (PKCS#8 PEM); the file must not exist.
    #[arg(long)]
    pub private_key_file: PathBuf,
}

/// The environment variable that may hold the signing key itself. It is read from the
/// environment only, never from a flag: command lines are visible to every user of the machine.
pub const SIGNING_KEY_ENV: &str = "INTERNAL_MCP_SIGNING_KEY";

/// Where the signing key comes from: the file, or [`SIGNING_KEY_ENV`]; exactly one of the two.
#[derive(Debug, Args)]
pub struct KeyArguments {
    /// A file holding the HS256 signing key (at least 32 bytes; a trailing newline is ignored).
    #[arg(long, env = "INTERNAL_MCP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

/// Ed25519 keys: the server's set of public keys, or the `token` command's private key.
#[derive(Debug, Args)]
pub struct PublicKeyArguments {
    /// A JWKS file of the Ed25519 public keys EdDSA credentials may be signed with, by kid. With
    /// it, the HS256 key becomes optional: leave it unset and HS256 credentials are refused.
    #[arg(long, env = "INTERNAL_MCP_PUBLIC_KEYS_FILE")]
    pub public_keys_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArguments {
    /// The address to listen on; loopback by default.
    #[arg(long, env = "INTERNAL_MCP_LISTEN", default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,
    /// Endpoints to mount: `all` (/mcp, every capability), `sql`, `metrics`, `incidents`
    /// (/mcp/<name>, only theirs).
    #[arg(long = "mount", value_enum, value_delimiter = ',', default_values_t = Endpoint::EVERY)]
    pub mounts: Vec<Endpoint>,
    /// The schema owner's connection: domain operations, audit trail, confirmations, user look-ups.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Secret,
    /// The `internal_mcp_reader` login, for every query that reads tenant data.
    #[arg(long, env = "INTERNAL_MCP_READER_URL", hide_env_values = true, value_parser = parse_secret)]
    pub reader_url: Secret,
    #[command(flatten)]
    pub key: KeyArguments,
    #[command(flatten)]
    pub public_keys: PublicKeyArguments,
    /// PostgreSQL cancels any statement on the reader connection after this long.
    #[arg(long, default_value_t = 5000)]
    pub statement_timeout_ms: u64,
    /// The most rows run_select returns.
    #[arg(long, default_value_t = Limits::DEFAULT.max_rows)]
    pub max_rows: usize,
    /// The most bytes of rows run_select returns.
    #[arg(long, default_value_t = Limits::DEFAULT.max_result_bytes)]
    pub max_result_bytes: usize,
    /// Queries whose estimated cost (EXPLAIN) is higher are refused before they run.
    #[arg(long, default_value_t = Limits::DEFAULT.max_query_cost)]
    pub max_query_cost: f64,
    /// Reader connections at most.
    #[arg(long, default_value_t = 8)]
    pub reader_connections: u32,
    /// Days audit records are kept before they are purged.
    #[arg(long, default_value_t = 90)]
    pub audit_retention_days: u64,
    /// Calls one user may have in flight at once.
    #[arg(long, default_value_t = 2)]
    pub max_calls_per_caller: usize,
    /// Calls one organisation may have in flight at once (fewer than the reader connections; with
    /// the defaults, two organisations at their limit still leave two of the eight free).
    #[arg(long, default_value_t = 3)]
    pub max_calls_per_organization: usize,
    /// Accepted `Host` header values; loopback names by default. Add the names internal services
    /// use when listening elsewhere.
    #[arg(long = "allowed-host", value_delimiter = ',', default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    pub allowed_hosts: Vec<String>,
    /// Start even though the reader role may connect to other databases on the server (for
    /// shared test servers only; production refuses).
    #[arg(long, env = "INTERNAL_MCP_ALLOW_READER_IN_OTHER_DATABASES")]
    pub allow_reader_in_other_databases: bool,
    /// Credential issuers (`iss`) to trust.
    #[arg(long = "trusted-issuer", value_delimiter = ',', default_values_t = DEFAULT_TRUSTED_ISSUERS.map(str::to_owned))]
    pub trusted_issuers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TokenArguments {
    /// The organisation's slug, e.g. `acme`.
    #[arg(long)]
    pub org: String,
    /// The acting user's e-mail address.
    #[arg(long)]
    pub user: String,
    /// The role to grant; the user's own role by default, and never more than it.
    #[arg(long, value_enum)]
    pub role: Option<RoleArgument>,
    /// Lifetime in seconds, 1 to 600.
    #[arg(long, default_value_t = 300)]
    pub ttl_seconds: u64,
    /// Mint a single-use credential: a client may set up a session with it and list the tools,
    /// and make one call; a second call with it is refused.
    #[arg(long)]
    pub single_use: bool,
    /// Sign with this Ed25519 private key (PKCS#8 PEM) instead of the HS256 key; needs --kid.
    #[arg(long, env = "INTERNAL_MCP_PRIVATE_KEY_FILE", requires = "kid")]
    pub private_key_file: Option<PathBuf>,
    /// The kid the private key's public half is published under in the server's JWKS.
    #[arg(long, env = "INTERNAL_MCP_KEY_ID")]
    pub kid: Option<String>,
    /// Used to resolve the organisation and user.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Secret,
    #[command(flatten)]
    pub key: KeyArguments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArgument {
    Viewer,
    Responder,
    Admin,
}

impl From<RoleArgument> for Role {
    fn from(role: RoleArgument) -> Self {
        match role {
            RoleArgument::Viewer => Role::Viewer,
            RoleArgument::Responder => Role::Responder,
            RoleArgument::Admin => Role::Admin,
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(arguments) => run_serve(arguments).await,
        Command::Token(arguments) => run_token(arguments).await,
        Command::Keygen(arguments) => run_keygen(&arguments),
    }
}

async fn run_serve(arguments: ServeArguments) -> anyhow::Result<()> {
    let public_keys = match &arguments.public_keys.public_keys_file {
        Some(path) => {
            PublicKeySet::from_jwks(&std::fs::read_to_string(path).map_err(|error| {
                Error::Startup(format!(
                    "cannot read the public keys file {}: {error}",
                    path.display()
                ))
            })?)?
        }
        None => PublicKeySet::default(),
    };
    // With public keys configured, the shared HS256 key is optional.
    let signing_key = match arguments.key.signing_key() {
        Ok(key) => Some(key),
        Err(_) if !public_keys.is_empty() && !arguments.key.is_configured() => None,
        Err(error) => return Err(error.into()),
    };
    let mut config = Config::with_credentials(
        connect_options("DATABASE_URL", &arguments.database_url)?,
        connect_options("INTERNAL_MCP_READER_URL", &arguments.reader_url)?,
        CredentialPolicy::from_keys(signing_key, public_keys),
    );
    config.endpoints = deduplicated(arguments.mounts);
    config.limits = Limits {
        statement_timeout: Duration::from_millis(arguments.statement_timeout_ms),
        max_rows: arguments.max_rows,
        max_result_bytes: arguments.max_result_bytes,
        max_query_cost: arguments.max_query_cost,
    };
    config.reader_connections = arguments.reader_connections;
    config.max_calls_per_caller = arguments.max_calls_per_caller;
    config.audit_retention =
        Duration::from_secs(arguments.audit_retention_days.saturating_mul(24 * 3600));
    config.max_calls_per_organization = arguments.max_calls_per_organization;
    config.allowed_hosts = arguments.allowed_hosts;
    config.allow_reader_in_other_databases = arguments.allow_reader_in_other_databases;
    if config.allow_reader_in_other_databases {
        tracing::warn!("the reader role may connect to other databases: allowed by configuration");
    }
    config.credentials.trusted_issuers = arguments.trusted_issuers;
    let state = AppState::connect(config).await?;
    let listener = tokio::net::TcpListener::bind(arguments.listen).await?;
    let address = listener.local_addr()?;
    let paths: Vec<&str> = state
        .config()
        .endpoints
        .iter()
        .map(|endpoint| endpoint.path())
        .collect();
    tracing::info!(%address, endpoints = ?paths, "internal-mcp is serving");
    serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn run_token(arguments: TokenArguments) -> anyhow::Result<()> {
    let private_key = match (&arguments.private_key_file, &arguments.kid) {
        (Some(path), Some(kid)) => Some(PrivateKey::from_pem(
            kid,
            &std::fs::read_to_string(path).map_err(|error| {
                Error::Startup(format!(
                    "cannot read the private key file {}: {error}",
                    path.display()
                ))
            })?,
        )?),
        _ => None,
    };
    let shared_key = match &private_key {
        Some(_) => None,
        None => Some(arguments.key.signing_key()?),
    };
    let lifetime = Duration::from_secs(arguments.ttl_seconds);
    if arguments.ttl_seconds == 0 || lifetime > MAX_CREDENTIAL_LIFETIME {
        anyhow::bail!(
            "--ttl-seconds must be between 1 and {}",
            MAX_CREDENTIAL_LIFETIME.as_secs()
        );
    }
    let options = connect_options("DATABASE_URL", &arguments.database_url)?;
    let database = sqlx::PgPool::connect_with(options).await?;
    let user: Option<(Uuid, Uuid, Role)> = sqlx::query_as(
        "SELECT u.id, u.organization_id, u.role FROM users u
           JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email = $2",
    )
    .bind(&arguments.org)
    .bind(&arguments.user)
    .fetch_optional(&database)
    .await?;
    database.close().await;
    let Some((user_id, organization_id, user_role)) = user else {
        anyhow::bail!(
            "no user {} in organisation {}",
            arguments.user,
            arguments.org
        );
    };
    let role = arguments.role.map_or(user_role, Role::from);
    if role > user_role {
        anyhow::bail!(
            "{} is a {user_role:?}; a credential cannot grant {role:?}",
            arguments.user
        );
    }
    let request = CredentialRequest {
        issuer: TOKEN_COMMAND_ISSUER.to_owned(),
        user_id,
        organization_id,
        role,
        lifetime,
        single_use: arguments.single_use,
    };
    let token = match (&private_key, &shared_key) {
        (Some(key), _) => mint_ed25519_credential(key, &request)?,
        (None, Some(key)) => mint_credential(key, &request)?,
        (None, None) => anyhow::bail!("no key to sign with"),
    };
    println!("{token}");
    Ok(())
}

impl KeyArguments {
    /// The signing key from exactly one source, checked for length.
    /// Whether a shared key is configured at all (file or environment).
    pub fn is_configured(&self) -> bool {
        self.signing_key_file.is_some() || std::env::var_os(SIGNING_KEY_ENV).is_some()
    }

    pub fn signing_key(&self) -> Result<SigningKey, Error> {
        let from_environment = std::env::var(SIGNING_KEY_ENV).ok().map(Secret::new);
        match (&self.signing_key_file, &from_environment) {
            (Some(_), Some(_)) => Err(Error::Startup(
                "set INTERNAL_MCP_SIGNING_KEY or INTERNAL_MCP_SIGNING_KEY_FILE, not both".into(),
            )),
            (None, None) => Err(Error::Startup(
                "no signing key: set INTERNAL_MCP_SIGNING_KEY_FILE (or INTERNAL_MCP_SIGNING_KEY)"
                    .into(),
            )),
            (None, Some(key)) => SigningKey::new(key.expose().as_bytes().to_vec()),
            (Some(path), None) => {
                let mut bytes = std::fs::read(path).map_err(|error| {
                    Error::Startup(format!(
                        "cannot read the signing key file {}: {error}",
                        path.display()
                    ))
                })?;
                while bytes
                    .last()
                    .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
                {
                    bytes.pop();
                }
                SigningKey::new(bytes)
            }
        }
    }
}

fn run_keygen(arguments: &KeygenArguments) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = PrivateKey::generate(&arguments.kid)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&arguments.private_key_file)
        .map_err(|error| {
            Error::Startup(format!(
                "cannot create {}: {error}",
                arguments.private_key_file.display()
            ))
        })?;
    file.write_all(key.to_pem().as_bytes())?;
    println!("{}", serde_json::json!({ "keys": [key.public_jwk()] }));
    Ok(())
}

fn connect_options(name: &str, url: &Secret) -> Result<PgConnectOptions, Error> {
    PgConnectOptions::from_str(url.expose())
        .map_err(|_| Error::Startup(format!("{name} is not a valid PostgreSQL URL")))
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text.to_owned()))
}

fn deduplicated(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_refuses_unknown_mounts() {
        Cli::command().debug_assert();
        let parsed = Cli::try_parse_from([
            "internal-mcp",
            "serve",
            "--database-url",
            "postgres://a@b/c",
            "--reader-url",
            "postgres://d@e/f",
            "--mount",
            "sql,metrics",
        ])
        .unwrap();
        let Command::Serve(serve) = parsed.command else {
            panic!("serve")
        };
        assert_eq!(serve.mounts, [Endpoint::Sql, Endpoint::Metrics]);
        assert!(format!("{serve:?}").contains("Secret(..)"));
        assert!(!format!("{serve:?}").contains("postgres://a@b/c"));
        let unknown = Cli::try_parse_from([
            "internal-mcp",
            "serve",
            "--database-url",
            "x",
            "--reader-url",
            "y",
            "--mount",
            "sql,everything",
        ]);
        assert!(unknown.is_err());
    }

    #[test]
    fn the_signing_key_is_never_taken_from_the_command_line() {
        let on_the_command_line = Cli::try_parse_from([
            "internal-mcp",
            "token",
            "--org",
            "acme",
            "--user",
            "dana@acme.example",
            "--database-url",
            "postgres://a@b/c",
            "--signing-key",
            "a-secret-that-would-show-in-ps-output",
        ]);
        assert!(on_the_command_line.is_err());
    }
}
