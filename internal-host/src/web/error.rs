//! Errors of the web side as pages a person can read: each says what happened and what to do.
//! The host's own failures become an opaque reference, with the details in the log.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::Error;
use crate::session::RoleCheckError;
use crate::turns::TurnError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WebError {
    #[error("not found")]
    NotFound,
    /// No live session: sign in (again).
    #[error("{0}")]
    SignInNeeded(String),
    #[error("the form's CSRF token is missing or wrong")]
    BadCsrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] Error),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    next: &'a str,
    next_label: &'a str,
}

impl From<TurnError> for WebError {
    fn from(error: TurnError) -> Self {
        match error {
            TurnError::NotFound => Self::NotFound,
            TurnError::EmptyQuestion => Self::Unprocessable("Write a question first.".into()),
            TurnError::QuestionTooLong { chars, max } => Self::TooLarge(format!(
                "Your question has {chars} characters; the assistant takes at most {max}. Shorten it and ask again."
            )),
            TurnError::Conflict(message) => Self::Conflict(message),
            TurnError::Internal(error) => Self::Internal(error),
        }
    }
}

impl From<RoleCheckError> for WebError {
    fn from(error: RoleCheckError) -> Self {
        match error {
            RoleCheckError::Ended(_) => {
                Self::SignInNeeded("Your sign-in has ended. Sign in again.".into())
            }
            RoleCheckError::Unavailable(reason) => {
                tracing::warn!(%reason, "cannot re-read a user's role");
                Self::Unavailable(
                    "The product's sign-in server cannot be reached to confirm your role; try again in a moment.".into(),
                )
            }
            RoleCheckError::Internal(error) => Self::Internal(error),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message, next, next_label) = match &self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it is not yours.".to_owned(),
                "/",
                "Your conversations",
            ),
            Self::SignInNeeded(message) => (
                StatusCode::UNAUTHORIZED,
                "Sign in",
                message.clone(),
                "/",
                "Sign in",
            ),
            Self::BadCsrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your current session (its CSRF token is missing or wrong). Reload the page and try again.".to_owned(),
                "/",
                "Your conversations",
            ),
            Self::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "Bad request",
                message.clone(),
                "/",
                "Your conversations",
            ),
            Self::TooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Question too long",
                message.clone(),
                "/",
                "Your conversations",
            ),
            Self::Unprocessable(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Cannot ask that",
                message.clone(),
                "/",
                "Your conversations",
            ),
            Self::Conflict(message) => (
                StatusCode::CONFLICT,
                "Not now",
                message.clone(),
                "/",
                "Your conversations",
            ),
            Self::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                message.clone(),
                "/",
                "Try again",
            ),
            Self::Internal(error) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, %error, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something broke",
                    format!("The assistant failed (reference {reference}); the operators can look it up in its log."),
                    "/",
                    "Your conversations",
                )
            }
        };
        let page = ErrorPage {
            title,
            message: &message,
            next,
            next_label,
        };
        match page.render() {
            Ok(body) => (status, Html(body)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}
