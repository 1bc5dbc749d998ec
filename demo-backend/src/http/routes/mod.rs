//! The API's handlers, one module per resource.

pub mod alerts;
pub mod deployments;
pub mod health;
pub mod incidents;
pub mod me;
pub mod metrics;
pub mod services;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::page::Page;
use crate::http::problem::ApiError;

/// One page of a list; pass `next_cursor` back as `cursor` for the next one (absent on the last).
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> From<Page<T>> for PageBody<T> {
    fn from(page: Page<T>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; the API is described at /api/v1/openapi.json".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
