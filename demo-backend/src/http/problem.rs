//! The API's one error type, rendered as `application/problem+json` (RFC 9457).
//!
//! Domain refusals become precise 4xx answers; database and unexpected errors become an opaque
//! 500 whose cause is logged, never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::DomainError;
use crate::domain::kinds::Scope;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this token lacks the `{}` scope", .0.as_str())]
    MissingScope(Scope),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A well-formed request with an unacceptable value.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A request that could not be parsed (JSON syntax, query string, path).
    #[error("{0}")]
    Malformed(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("send the body as JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("rate limit exceeded; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("the method is not allowed on this path")]
    MethodNotAllowed,
    #[error("the database is not reachable")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `title` is the HTTP status phrase and `code` tells the kind.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// A stable machine-readable kind: `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `invalid_field`, `malformed_request`, `payload_too_large`, `unsupported_media_type`,
    /// `rate_limited`, `method_not_allowed`, `unavailable` or `internal`.
    pub code: &'static str,
    /// The offending field, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::MissingScope(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(error) = &self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let problem = Problem {
            problem_type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code,
            field: match &self {
                ApiError::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="api""#),
                );
            }
            ApiError::MissingScope(scope) => {
                let challenge = format!(
                    r#"Bearer realm="api", error="insufficient_scope", scope="{}""#,
                    scope.as_str()
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::RateLimited {
                retry_after_seconds,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound(message) => ApiError::NotFound(message),
            DomainError::Conflict(message) => ApiError::Conflict(message),
            DomainError::Invalid { field, message } => ApiError::Invalid { field, message },
            DomainError::Database(error) => error.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::error!(%error, "database unavailable");
                ApiError::Unavailable
            }
            // A data exception (a value PostgreSQL cannot store or compare) comes from input
            // that slipped past validation: the client's mistake, not the server's.
            sqlx::Error::Database(database)
                if database.code().is_some_and(|code| code.starts_with("22")) =>
            {
                tracing::warn!(error = %database, "request carried a value the database refused");
                ApiError::Malformed(format!(
                    "a value in the request was refused by the database: {database}"
                ))
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // Wrong types, unknown fields, bad enum values, missing fields.
            JsonRejection::JsonDataError(error) => {
                let text = error.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text);
                let (field, message) = field_of_serde_error(text);
                ApiError::invalid(field, message)
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(error)
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge(super::MAX_BODY_BYTES)
            }
            other => ApiError::Malformed(other.body_text()),
        }
    }
}

/// Splits serde's message into the field it is about and the rest. serde_path_to_error prefixes
/// the path (`title: invalid type ...`) unless the error is at the top level, where serde names
/// missing and unknown fields inside the message instead.
fn field_of_serde_error(text: &str) -> (String, String) {
    if let Some((path, message)) = text.split_once(": ")
        && !path.is_empty()
        && !path.contains(char::is_whitespace)
        && path != "."
    {
        return (path.to_owned(), message.to_owned());
    }
    let message = text.strip_prefix(".: ").unwrap_or(text);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.split_once(prefix))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    (
        named.unwrap_or_else(|| "body".to_owned()),
        message.to_owned(),
    )
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::Malformed(format!("invalid query string: {detail}"))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        let detail = rejection.body_text();
        ApiError::Malformed(format!("invalid path: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::field_of_serde_error;

    fn check(text: &str, field: &str, message: &str) {
        assert_eq!(
            field_of_serde_error(text),
            (field.to_owned(), message.to_owned()),
            "{text}"
        );
    }

    #[test]
    fn serde_messages_name_their_field_once() {
        check(
            "title: invalid type: integer `5`, expected a string",
            "title",
            "invalid type: integer `5`, expected a string",
        );
        check(
            "service_ids[0]: UUID parsing failed",
            "service_ids[0]",
            "UUID parsing failed",
        );
        check(
            "missing field `severity` at line 1 column 14",
            "severity",
            "missing field `severity` at line 1 column 14",
        );
        check(
            ".: unknown field `extra`, expected one of `title`",
            "extra",
            "unknown field `extra`, expected one of `title`",
        );
        check(
            "invalid type: sequence, expected struct NewIncident",
            "body",
            "invalid type: sequence, expected struct NewIncident",
        );
    }
}
