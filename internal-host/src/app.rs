//! The application as a value: [`AppState`] holds what requests need (the host's database, checked
//! and migrated, the internal-mcp connector, the event log, the OAuth client users sign in with,
//! and the orchestrator of turns), [`router`] builds the HTTP app, and [`serve`] runs it on a
//! listener the caller bound.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::credentials::CredentialMinter;
use crate::database;
use crate::error::Error;
use crate::events::EventLog;
use crate::mcp::McpConnector;
use crate::sign_in::OAuthClient;
use crate::turns::{self, NoModel, Orchestrator, Turns};

/// The name internal-mcp's tools are namespaced under.
pub const INTERNAL_MCP: &str = "internal-mcp";

/// Everything a request needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    orchestrator: Orchestrator,
}

struct Inner {
    config: Config,
    database: PgPool,
    internal_mcp: McpConnector,
    events: EventLog,
    /// `None` when the configuration names no OAuth server: nobody can sign in.
    oauth: Option<OAuthClient>,
}

impl AppState {
    /// Validates the configuration, connects to the host's database, checks its role's privileges,
    /// applies pending migrations, and reads the OAuth server's metadata when sign-in is
    /// configured; any failure stops the start. Turns are answered by [`NoModel`] until
    /// [`AppState::with_turns`] gives the agent.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let database = database::connect(&config.database).await?;
        let minter = CredentialMinter::new(
            &config.credential_key,
            config.mcp_limits.credential_lifetime,
        );
        let internal_mcp = McpConnector::new(
            INTERNAL_MCP,
            &config.internal_mcp_url,
            minter,
            config.mcp_limits,
        );
        let oauth = match &config.web.sign_in {
            Some(sign_in) => Some(OAuthClient::discover(sign_in, config.web.redirect_uri()).await?),
            None => None,
        };
        let events = EventLog::new(database.clone());
        let orchestrator = Orchestrator::new(
            database.clone(),
            events.clone(),
            Arc::new(NoModel),
            config.web.max_question_chars,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                database,
                internal_mcp,
                events,
                oauth,
            }),
            orchestrator,
        })
    }

    /// The same state with `turns` (the agent) answering questions.
    pub fn with_turns(mut self, turns: Arc<dyn Turns>) -> Self {
        self.orchestrator = Orchestrator::new(
            self.inner.database.clone(),
            self.inner.events.clone(),
            turns,
            self.inner.config.web.max_question_chars,
        );
        self
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn database(&self) -> &PgPool {
        &self.inner.database
    }

    pub fn internal_mcp(&self) -> &McpConnector {
        &self.inner.internal_mcp
    }

    /// The durable event log; the one instance whose signals wake this process's readers.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// The OAuth server users sign in with, when configured.
    pub fn oauth(&self) -> Option<&OAuthClient> {
        self.inner.oauth.as_ref()
    }

    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }
}

/// The HTTP app: the pages, the event stream, sign-in, and `/healthz`.
pub fn router(state: &AppState) -> Router {
    crate::web::routes(state.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(TraceLayer::new_for_http())
}

/// Serves the app on `listener` until `shutdown` completes. Turns an earlier process left running
/// are ended first (their tasks died with it).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(error) = turns::end_interrupted_turns(state.database(), state.events()).await {
        return Err(std::io::Error::other(error.to_string()));
    }
    axum::serve(listener, router(&state))
        .with_graceful_shutdown(shutdown)
        .await
}
