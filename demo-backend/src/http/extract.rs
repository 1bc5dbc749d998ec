//! Axum's extractors with their rejections turned into [`ApiError`]s, so malformed JSON, query
//! strings and paths get the same problem+json answers as everything else.
//!
//! Every request body of the API is a JSON object: [`Json`] (and [`OptionalJson`]) refuse any
//! other top-level JSON value (array, string, number, boolean, null) with a 422 naming `body`
//! before the handler runs. serde alone would accept an array for a struct (its fields in
//! order), so this check cannot be left to the body types.

use std::fmt;
use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::response::IntoResponse;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};

use crate::http::problem::ApiError;

/// A JSON object body; other JSON values, unknown fields and wrong types are 422 naming the
/// field (`body` for the whole body).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(JsonObject(value)) =
            axum::Json::<JsonObject<T>>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// An optional JSON object body: absent when the request has no body and no Content-Type,
/// otherwise exactly like [`Json`] (415 without a JSON content type, 413 when too large, 422 on
/// a value that is not an object or on bad fields).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
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

/// `T` read from a JSON object only: the object's entries are handed to `T` as they are parsed
/// (so field paths, duplicate and unknown fields are reported as before), and any other JSON
/// value is a data error ("invalid type: sequence, expected a JSON object").
struct JsonObject<T>(T);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for ObjectVisitor<T> {
    type Value = JsonObject<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(JsonObject)
    }
}
