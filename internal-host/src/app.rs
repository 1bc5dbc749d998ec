//! The application as a value: [`AppState`] holds what requests need (the host's database, checked
//! and migrated, and the internal-mcp connector), [`router`] builds the HTTP app, and [`serve`]
//! runs it on a listener the caller bound.

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
use crate::mcp::McpConnector;

/// The name internal-mcp's tools are namespaced under.
pub const INTERNAL_MCP: &str = "internal-mcp";

/// Everything a request needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    database: PgPool,
    internal_mcp: McpConnector,
}

impl AppState {
    /// Validates the configuration, connects to the host's database, checks its role's privileges
    /// and applies pending migrations; any failure stops the start.
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
        Ok(Self(Arc::new(Inner {
            config,
            database,
            internal_mcp,
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn database(&self) -> &PgPool {
        &self.0.database
    }

    pub fn internal_mcp(&self) -> &McpConnector {
        &self.0.internal_mcp
    }
}

/// The HTTP app.
pub fn router(_state: &AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(TraceLayer::new_for_http())
}

/// Serves the app on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(&state))
        .with_graceful_shutdown(shutdown)
        .await
}
