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
}

impl AppState {
    pub fn new(db: PgPool, rate_limit: RateLimit) -> Self {
        Self {
            db,
            rate_limiter: Arc::new(RateLimiter::new(rate_limit)),
        }
    }
}

/// The whole application: the API under `/api/v1`, its OpenAPI document, and health probes.
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
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
