//! The one error type of internal-host. Start-up failures stop the process with their reason;
//! MCP transport failures are told apart from tool errors (which are results, not errors); database
//! and other internal failures reach a person only as an opaque, logged reference.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or database set-up that is unsafe or incomplete: the host does not start.
    #[error("{0}")]
    Startup(String),
    /// An MCP server could not be reached, timed out or broke the protocol (not a tool error).
    #[error("{server}: {message}")]
    McpTransport { server: String, message: String },
    /// A credential could not be minted.
    #[error("could not mint a credential: {0}")]
    Credential(String),
    /// The host's own database work failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A bug or broken stored data in the host itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// The host's own migrations failed.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl IntoResponse for Error {
    /// Everything that reaches HTTP through this path is the host's own failure: the page gets a
    /// reference to quote, the log gets the details.
    fn into_response(self) -> Response {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(%reference, error = %self, "internal error");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error (reference {reference}); the operators can look it up in internal-host's log\n"),
        )
            .into_response()
    }
}
