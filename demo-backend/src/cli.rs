//! The `demo-backend` command line: serve the API, migrate, seed demo data, create tokens, set
//! passwords.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, DurationRound, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::domain::kinds::Scope;
use crate::domain::passwords;
use crate::domain::tokens::{self, NewToken};
use crate::http::{self, AppState, RateLimit};
use crate::oauth::OAuthSettings;
use crate::seed::{self, SeedOptions};

#[derive(Debug, Parser)]
#[command(
    name = "demo-backend",
    version,
    about = "The demo monitoring product: REST API, migrations, demo data."
)]
pub struct Cli {
    /// PostgreSQL URL, e.g. postgres://user:password@localhost:5432/monitoring
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending migrations.
    Migrate,
    /// Fill an empty database with deterministic demo data and print each seeded user's token.
    Seed(SeedArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage users' sign-in passwords.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Set a user's sign-in password, read from standard input (the first line, without its line
    /// break), so it never shows in the process list or the shell's history.
    SetPassword(SetPasswordArgs),
}

#[derive(Debug, Args)]
struct SetPasswordArgs {
    /// The organisation's slug.
    #[arg(long)]
    org: String,
    /// The user's email.
    #[arg(long)]
    user: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests each API token may make per minute, on average.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_per_minute: u32,
    /// Requests each API token may make in a burst.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst: u32,
    /// The URL people and clients reach this server at: the OAuth issuer, e.g.
    /// https://monitoring.example.com (default: http://<listen>).
    #[arg(long, env = "DEMO_PUBLIC_URL")]
    public_url: Option<String>,
    /// A JSON file of pre-registered confidential OAuth clients (see ARCHITECTURE.md).
    #[arg(long, env = "DEMO_OAUTH_CLIENTS_FILE")]
    oauth_clients_file: Option<std::path::PathBuf>,
    /// PEM certificates to trust, besides the system's roots, when fetching OAuth client
    /// metadata documents (e.g. an internal CA).
    #[arg(long, env = "DEMO_OAUTH_CLIENT_DOCUMENTS_CA_FILE")]
    oauth_client_documents_ca_file: Option<std::path::PathBuf>,
    /// Also fetch OAuth client metadata documents from loopback and private addresses. For
    /// tests only: it opens the guard against server-side request forgery.
    #[arg(long)]
    oauth_client_documents_allow_private_addresses: bool,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Multiplies the number of services (and so of samples): 5 gives about 10 million samples.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    scale: u32,
    /// Days of per-minute samples.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=30))]
    days: u32,
    /// End of the generated data, RFC 3339 (default: now). Fix it to reproduce a data set exactly.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for a user and print it (only the token, on stdout).
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// The organisation's slug.
    #[arg(long)]
    org: String,
    /// The user's email.
    #[arg(long)]
    user: String,
    /// Comma-separated scopes: read, write, admin (at most what the user's role allows).
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<Scope>,
    /// A name to tell the token apart.
    #[arg(long, default_value = "cli")]
    name: String,
    /// Days until the token expires (default: never).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    expires_in_days: Option<u32>,
}

impl Cli {
    /// Runs the command; errors are for the user to read.
    pub async fn run(self) -> anyhow::Result<()> {
        let database_url = self
            .database_url
            .context("set DATABASE_URL (or --database-url) to the PostgreSQL database to use")?;
        let db = connect(&database_url).await?;
        match self.command {
            Command::Serve(args) => serve(db, args).await,
            Command::Migrate => migrate(&db).await,
            Command::Seed(args) => seed_database(&db, args).await,
            Command::Token(TokenCommand::Create(args)) => create_token(&db, args).await,
            Command::User(UserCommand::SetPassword(args)) => set_password(&db, args).await,
        }
    }
}

/// Connects, with errors that say which server could not be reached (never the password).
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|error| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {error}"))?;
    let server = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {server}"))
}

async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    crate::MIGRATOR
        .run(db)
        .await
        .context("applying migrations failed")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(db: PgPool, args: ServeArgs) -> anyhow::Result<()> {
    migrate(&db).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving the API");
    let rate_limit = RateLimit {
        per_minute: args.rate_limit_per_minute,
        burst: args.rate_limit_burst,
    };
    let issuer = match args.public_url {
        Some(url) => url,
        None => format!("http://{}", listener.local_addr()?),
    };
    let mut oauth = OAuthSettings::new(&issuer)?;
    if let Some(path) = &args.oauth_clients_file {
        oauth = oauth.with_clients_file(path)?;
    }
    if let Some(path) = &args.oauth_client_documents_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA file {}", path.display()))?;
        oauth.client_documents.extra_roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("the CA file {} is not PEM certificates", path.display()))?;
        if oauth.client_documents.extra_roots.is_empty() {
            anyhow::bail!("the CA file {} holds no certificate", path.display());
        }
    }
    if args.oauth_client_documents_allow_private_addresses {
        tracing::warn!(
            "client metadata documents may be fetched from private addresses: for tests only"
        );
        oauth.client_documents.allow_private_addresses = true;
    }
    tracing::info!(issuer = %oauth.issuer, clients = oauth.clients.len(), "OAuth authorization server");
    let state = AppState::new(db, rate_limit).with_oauth(oauth);
    http::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn seed_database(db: &PgPool, args: SeedArgs) -> anyhow::Result<()> {
    migrate(db).await?;
    let until = match args.until {
        Some(until) => until,
        None => Utc::now().duration_trunc(chrono::Duration::minutes(1))?,
    };
    let options = SeedOptions {
        scale: args.scale,
        days: args.days,
        ..SeedOptions::new(until)
    };
    let report = seed::seed(db, &options).await?;
    let seconds = report.elapsed.as_secs_f64();
    eprintln!(
        "seeded {} services and {} metric samples ({} rows) in {seconds:.1} s: {:.0} rows/s",
        report.services,
        report.metric_samples,
        report.total_rows,
        report.total_rows as f64 / seconds.max(f64::EPSILON),
    );
    // Columns: org, user, role, token, password (the password was added last, so scripts that
    // read the token as the fourth column keep working).
    println!(
        "{:<10} {:<28} {:<10} {:<68} password",
        "org", "user", "role", "token"
    );
    for organization in &report.organizations {
        for user in &organization.users {
            let role = format!("{:?}", user.role).to_lowercase();
            println!(
                "{:<10} {:<28} {:<10} {:<68} {}",
                organization.slug,
                user.email,
                role,
                user.token.expose(),
                user.password.expose()
            );
        }
    }
    Ok(())
}

async fn set_password(db: &PgPool, args: SetPasswordArgs) -> anyhow::Result<()> {
    migrate(db).await?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match passwords::set(db, &args.org, &args.user, password).await {
        Ok(()) => {
            eprintln!("password set for {} in {}", args.user, args.org);
            Ok(())
        }
        Err(error) => bail!("cannot set the password: {error}"),
    }
}

async fn create_token(db: &PgPool, args: TokenCreateArgs) -> anyhow::Result<()> {
    migrate(db).await?;
    let expires_at = args
        .expires_in_days
        .map(|days| Utc::now() + chrono::Duration::days(i64::from(days)));
    let secret = tokens::create(
        db,
        NewToken {
            organization_slug: &args.org,
            user_email: &args.user,
            name: &args.name,
            scopes: &args.scopes,
            expires_at,
        },
    )
    .await;
    match secret {
        Ok(secret) => {
            println!("{}", secret.expose());
            Ok(())
        }
        Err(error) => bail!("cannot create the token: {error}"),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
