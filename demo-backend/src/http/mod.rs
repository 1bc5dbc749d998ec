//! The public REST API (`/api/v1`): routes, shared state, and serving on a bound listener.

mod auth;
mod extract;
mod openapi;
mod problem;
mod rate_limit;
mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::oauth::{OAuthServer, OAuthSettings};

pub use problem::{ApiError, Problem};
pub use rate_limit::RateLimit;
use rate_limit::RateLimiter;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    db: PgPool,
    rate_limiter: Arc<RateLimiter>,
    /// The OAuth authorization server, when configured (`serve` always configures it).
    oauth: Option<Arc<OAuthServer>>,
}

impl AppState {
    pub fn new(db: PgPool, rate_limit: RateLimit) -> Self {
        Self {
            db,
            rate_limiter: Arc::new(RateLimiter::new(rate_limit)),
            oauth: None,
        }
    }

    /// Also acts as the OAuth authorization server described by `settings`.
    pub fn with_oauth(mut self, settings: OAuthSettings) -> Self {
        self.oauth = Some(Arc::new(OAuthServer::new(settings)));
        self
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.db
    }

    pub(crate) fn oauth(&self) -> Option<&OAuthServer> {
        self.oauth.as_deref()
    }
}

/// The whole application: the API under `/api/v1`, its OpenAPI document, health probes, and the
/// OAuth authorization server (`/oauth/...`, `/.well-known/oauth-authorization-server`).
pub fn router(state: AppState) -> Router {
    let (router, document) = openapi::router_and_document();
    let document = Arc::new(document);
    router
        .route(
            openapi::DOCUMENT_PATH,
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .merge(crate::oauth::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The OpenAPI document of the API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::router_and_document().1
}

/// Serves `router` on an already-bound listener until `shutdown` completes, then finishes the
/// requests in flight. Handlers see the peer's address (sign-in throttling counts per address).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
