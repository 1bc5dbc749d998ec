//! The application as a value: [`AppState`] holds everything the server needs (connected and
//! checked at start-up), [`router`] builds the HTTP app with the mounted endpoints behind the
//! credential check, and [`serve`] runs it on a listener the caller bound.
//!
//! The MCP transport is rmcp's streamable HTTP in stateless mode: no sessions to hijack or leak,
//! every request authenticated on its own, and a fresh handler per request. Its `Host` allow-list
//! (loopback by default) guards against DNS rebinding.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::admission::AdmissionControl;
use crate::audit::AuditTrail;
use crate::auth::{Authenticator, require_service_credential};
use crate::config::{Config, MAX_REQUEST_BODY_BYTES};
use crate::database::Databases;
use crate::error::Error;
use crate::operations::Operations;
use crate::reader::{self, Reader};
use crate::roles::Roles;
use crate::server::InternalMcpServer;

/// How often old audit records and expired confirmations are purged.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Everything a request needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    databases: Databases,
    reader: Reader,
    authenticator: Authenticator,
    roles: Roles,
    operations: Operations,
    audit: AuditTrail,
    admission: AdmissionControl,
}

impl AppState {
    /// Validates the configuration, connects both pools, applies pending migrations and runs the
    /// start-up checks; any failure is an [`Error::Startup`] and nothing is served.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let databases = Databases::connect(
            &config.privileged_database,
            &reader::with_session_settings(config.reader_database.clone(), &config.limits),
            config.reader_connections,
            config.allow_reader_in_other_databases,
        )
        .await?;
        let reader = Reader::new(databases.reader.clone(), config.limits);
        reader.check_session_settings().await?;
        let audit = AuditTrail::new(databases.privileged.clone());
        audit.spawn_purging(config.audit_retention, PURGE_INTERVAL);
        let roles = Roles::new(databases.privileged.clone());
        Ok(Self(Arc::new(Inner {
            authenticator: Authenticator::new(
                &config.credentials,
                databases.privileged.clone(),
                roles.clone(),
            ),
            roles,
            operations: Operations::new(
                databases.privileged.clone(),
                reader.clone(),
                config.confirmation_lifetime,
            ),
            audit,
            admission: AdmissionControl::new(
                config.max_calls_per_caller,
                config.max_calls_per_organization,
                config.limits.statement_timeout,
            ),
            reader,
            databases,
            config,
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn databases(&self) -> &Databases {
        &self.0.databases
    }

    pub fn reader(&self) -> &Reader {
        &self.0.reader
    }

    pub fn operations(&self) -> &Operations {
        &self.0.operations
    }

    pub fn roles(&self) -> &Roles {
        &self.0.roles
    }

    pub fn audit(&self) -> &AuditTrail {
        &self.0.audit
    }

    pub fn admission(&self) -> &AdmissionControl {
        &self.0.admission
    }
}

/// The HTTP app: each configured endpoint behind the credential check, and an unauthenticated
/// `/healthz`.
pub fn router(state: &AppState) -> Router {
    let mut endpoints = Router::new();
    for &endpoint in &state.config().endpoints {
        let tools = Arc::new(InternalMcpServer::tools_for(endpoint));
        let server_state = state.clone();
        let transport = StreamableHttpServerConfig::default()
            .with_allowed_hosts(state.config().allowed_hosts.clone())
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES);
        let service = StreamableHttpService::new(
            move || {
                Ok(InternalMcpServer::new(
                    server_state.clone(),
                    endpoint,
                    tools.clone(),
                ))
            },
            Arc::new(NeverSessionManager::default()),
            transport,
        );
        endpoints = endpoints.route_service(endpoint.path(), service);
    }
    endpoints
        .layer(from_fn_with_state(
            state.0.authenticator.clone(),
            require_service_credential,
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(TraceLayer::new_for_http())
}

/// Serves the app on `listener` until `shutdown` completes, then writes the audit records still
/// queued.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(&state))
        .with_graceful_shutdown(shutdown)
        .await;
    // The records of the last calls are written before the process may end.
    state.audit().flush().await;
    served
}
