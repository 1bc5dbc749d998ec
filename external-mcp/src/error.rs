//! The crate's one error type, and how each error reads to the person or model who must act on it.
//!
//! Tools turn an [`Error`] into a tool result with `isError` whose text says what failed, why, and
//! what to try ([`Error::for_tool`]); the HTTP layer turns the transport's own refusals (missing
//! bearer, disallowed Host) into HTTP answers. Nothing here ever contains a token.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// stdio without DEMO_API_TOKEN or DEMO_API_TOKEN_FILE.
    #[error("no API token is configured")]
    NoToken,
    #[error("the token file {path} cannot be used: {detail}")]
    TokenFileUnreadable { path: String, detail: String },
    /// The API answered 401 to this token.
    #[error("your token was rejected by {api_url}: {detail}")]
    TokenRejected { api_url: String, detail: String },
    /// The API answered 403: the token lacks a scope.
    #[error("{detail}")]
    MissingScope { detail: String },
    #[error("{detail}")]
    NotFound { detail: String },
    /// The resource's state does not allow the change (HTTP 409).
    #[error("{detail}")]
    Conflict { detail: String },
    /// The API refused a value (HTTP 400, 413, 415 or 422).
    #[error("the API refused the request: {detail}")]
    Refused { detail: String },
    #[error(
        "the API's rate limit for your token was reached; it asks to wait {retry_after_seconds} s"
    )]
    RateLimited { retry_after_seconds: u64 },
    /// HTTP 5xx after the retries.
    #[error("the API at {api_url} failed (HTTP {status}): {detail}")]
    Unavailable {
        api_url: String,
        status: u16,
        detail: String,
    },
    #[error("the API at {api_url} did not answer within {seconds} s")]
    Timeout { api_url: String, seconds: u64 },
    #[error("cannot reach the API at {api_url}: {detail}")]
    Unreachable { api_url: String, detail: String },
    #[error("the API answered in an unexpected way: {detail}")]
    UnexpectedResponse { detail: String },
    /// The MCP client cancelled the request.
    #[error("the request was cancelled")]
    Cancelled,
    /// A tool argument that cannot be used as given.
    #[error("{0}")]
    InvalidInput(String),
    /// HTTP transport: no `Authorization: Bearer` header.
    #[error("send your demo API token as `Authorization: Bearer <token>`")]
    MissingBearer,
    #[error("the Host header is not one this server answers to")]
    HostNotAllowed,
    #[error("requests from this Origin are not allowed")]
    OriginNotAllowed,
}

impl Error {
    /// The message of a failed tool call: what failed, why, and what to try.
    pub fn for_tool(&self, action: &str) -> String {
        let what = self.to_string();
        let what = what.trim_end_matches('.');
        let advice = self.advice();
        if advice.is_empty() {
            format!("Could not {action}: {what}.")
        } else {
            format!("Could not {action}: {what}. {advice}")
        }
    }

    /// What the user (or the model on their behalf) can do about it.
    pub fn advice(&self) -> String {
        match self {
            Error::NoToken => "Set DEMO_API_TOKEN (or DEMO_API_TOKEN_FILE) in this MCP server's configuration \
                               to a token from your monitoring account, then restart the host."
                .into(),
            Error::TokenFileUnreadable { .. } => {
                "Write the token (alone on one line) into that file; it is read again automatically.".into()
            }
            Error::TokenRejected { .. } => "Create a new token in your monitoring account and put it in this \
                                            server's configuration (a token file is re-read automatically)."
                .into(),
            Error::MissingScope { .. } => {
                "Your token cannot make changes: ask an admin for a token with the `write` scope.".into()
            }
            Error::NotFound { .. } => "Check the name or id; find_services and list_incidents show what exists.".into(),
            Error::Conflict { .. } => "get_incident shows the incident's current state.".into(),
            Error::Refused { .. } | Error::InvalidInput(_) => "Correct the argument and call again.".into(),
            Error::RateLimited { retry_after_seconds } => format!(
                "Wait {retry_after_seconds} s before the next call, or narrow the question so it needs fewer calls."
            ),
            Error::Unavailable { .. } => "The monitoring service is having trouble; try again in a minute.".into(),
            Error::Timeout { .. } => {
                "Try a shorter time window or a narrower filter, or try again in a minute.".into()
            }
            Error::Unreachable { .. } => {
                "Check DEMO_API_URL and that the monitoring service is up, then try again.".into()
            }
            Error::UnexpectedResponse { .. } => {
                "external-mcp and the API may be of different versions; report this to your administrator.".into()
            }
            Error::Cancelled
            | Error::MissingBearer
            | Error::HostNotAllowed
            | Error::OriginNotAllowed => String::new(),
        }
    }
}

impl IntoResponse for Error {
    /// The HTTP transport's own refusals. 401 challenges are built by the HTTP layer, which knows
    /// the metadata URL; this covers the rest.
    fn into_response(self) -> Response {
        let status = match &self {
            Error::MissingBearer | Error::TokenRejected { .. } | Error::NoToken => {
                StatusCode::UNAUTHORIZED
            }
            Error::HostNotAllowed | Error::OriginNotAllowed | Error::MissingScope { .. } => {
                StatusCode::FORBIDDEN
            }
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Unreachable { .. } | Error::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::InvalidInput(_) | Error::Refused { .. } => StatusCode::BAD_REQUEST,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::TokenFileUnreadable { .. }
            | Error::UnexpectedResponse { .. }
            | Error::Cancelled => StatusCode::BAD_GATEWAY,
        };
        let body = serde_json::json!({ "error": self.to_string(), "advice": self.advice() });
        let mut response = (status, axum::Json(body)).into_response();
        if let Error::RateLimited {
            retry_after_seconds,
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}
