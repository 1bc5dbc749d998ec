//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use crate::http::AppState;
use crate::http::problem::ApiError;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = String),
        (status = 503, description = "The database is not reachable"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.db)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok((StatusCode::OK, "ready"))
}
