//! The assistant's web side: sign-in pages, the conversation list and chat pages (readable without
//! JavaScript), the forms that ask, stop and answer approvals (each POST carries the session's
//! CSRF token), the server-sent event stream of a conversation, the Investigations pages
//! (AgenticOps), and the two static files.
//!
//! Every response gets a strict Content-Security-Policy (scripts and styles only from this host,
//! nothing framed) and `Cache-Control: no-store`.

mod auth;
pub mod chart;
mod error;
mod extract;
mod investigations;
pub mod markdown;
mod pages;
mod sse;
mod view;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;

/// Forms are small; a question is at most a few pages.
const MAX_FORM_BYTES: usize = 256 * 1024;

const CHAT_JS: &str = include_str!("../../static/chat.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

/// The routes of the web side.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/conversations", post(pages::new_conversation))
        .route("/conversations/{conversation_id}", get(pages::chat))
        .route("/conversations/{conversation_id}/turns", post(pages::ask))
        .route(
            "/conversations/{conversation_id}/turns/{turn_id}",
            get(pages::turn_fragment),
        )
        .route(
            "/conversations/{conversation_id}/turns/{turn_id}/stop",
            post(pages::stop),
        )
        .route(
            "/conversations/{conversation_id}/approvals/{approval_id}",
            post(pages::decide),
        )
        .route("/conversations/{conversation_id}/events", get(sse::events))
        .route("/investigations", get(investigations::list))
        .route(
            "/investigations/{investigation_id}",
            get(investigations::detail),
        )
        .route(
            "/investigations/{investigation_id}/chat",
            post(investigations::continue_in_chat),
        )
        .route("/auth/sign-in", get(auth::sign_in))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/sign-out", post(auth::sign_out))
        .route("/static/chat.js", get(chat_js))
        .route("/static/style.css", get(style_css))
        .fallback(|| async { error::WebError::NotFound })
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The callback's URL holds a code: never send it anywhere.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn chat_js() -> Response {
    static_file("text/javascript; charset=utf-8", CHAT_JS)
}

async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
