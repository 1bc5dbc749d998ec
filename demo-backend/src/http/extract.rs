//! Axum's extractors with their rejections turned into [`ApiError`]s, so malformed JSON, query
//! strings and paths get the same problem+json answers as everything else.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::response::IntoResponse;

use crate::http::problem::ApiError;

/// A JSON body; unknown fields and wrong types are 422 naming the field.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// An optional JSON body: absent when the request has no body and no Content-Type, otherwise
/// exactly like [`Json`] (415 without a JSON content type, 413 when too large, 422 on bad fields).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let declared_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let has_body = headers.contains_key(CONTENT_TYPE)
            || headers.contains_key(TRANSFER_ENCODING)
            || declared_length.is_some_and(|length| length > 0);
        if !has_body {
            return Ok(Self(None));
        }
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}

/// A query string.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters (ids are UUIDs; anything else is 400).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
