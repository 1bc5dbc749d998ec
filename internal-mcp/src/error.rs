//! The one error type of internal-mcp, and how it reaches people: as an HTTP 401 for credential
//! failures, as a tool result with `isError` for everything a tool refuses (the message says what to
//! do), and as an opaque, logged reference for failures that are the server's own business.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use demo_backend::domain::DomainError;
use rmcp::model::{CallToolResult, ContentBlock};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credential, or one internal-mcp does not accept: HTTP 401. The text says why.
    #[error("{0}")]
    Unauthenticated(String),
    /// Understood but not allowed: a role, a limit, a confirmation rule.
    #[error("{0}")]
    Refused(String),
    /// An argument is not acceptable; the text names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing of that name or id in the caller's organisation.
    #[error("{0}")]
    NotFound(String),
    /// A query on the reader connection failed in a way the caller should read: PostgreSQL's own
    /// message, with what it means here.
    #[error("{0}")]
    Query(String),
    /// Configuration or database set-up that is unsafe or incomplete: the server does not start.
    #[error("{0}")]
    Startup(String),
    /// A failure of the server's own database work; callers see only a reference to the log.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// The tool result a caller sees for this error (`isError: true`).
    pub fn into_tool_result(self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.caller_message())])
    }

    /// What the caller is told. Internal failures are logged here with a reference the caller can
    /// quote; their details never leave the server.
    pub fn caller_message(&self) -> String {
        match self {
            Error::Database(error) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, error = %error, "internal database error");
                format!(
                    "internal error (reference {reference}); the operators can look it up in internal-mcp's log"
                )
            }
            other => other.to_string(),
        }
    }
}

impl From<DomainError> for Error {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound(message) => Error::NotFound(message),
            DomainError::Conflict(message) => Error::Refused(message),
            DomainError::Invalid { field, message } => {
                Error::InvalidArgument(format!("{field}: {message}"))
            }
            DomainError::Database(error) => Error::Database(error),
        }
    }
}

impl IntoResponse for Error {
    /// Only the authentication middleware answers with an `Error` over HTTP; everything else is a
    /// tool result.
    fn into_response(self) -> Response {
        match self {
            Error::Unauthenticated(reason) => {
                let challenge = format!(
                    "Bearer realm=\"internal-mcp\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.replace(['"', '\\'], "'")
                );
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    format!("401 Unauthorized: {reason}\n"),
                )
                    .into_response();
                let value = HeaderValue::from_str(&challenge).unwrap_or_else(|_| {
                    HeaderValue::from_static(
                        "Bearer realm=\"internal-mcp\", error=\"invalid_token\"",
                    )
                });
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
                response
            }
            other => {
                let message = other.caller_message();
                (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
            }
        }
    }
}
