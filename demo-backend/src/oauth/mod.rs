//! The product as its own OAuth 2.1 authorization server, so that people sign in with their
//! product account wherever an MCP host or the product's assistant needs their permission.
//!
//! - [`metadata`]: RFC 8414 metadata.
//! - `authorize`: the sign-in and consent pages (authorization code with PKCE S256 only).
//! - `token`: codes, refresh-token rotation with reuse detection, RFC 8693 token exchange,
//!   RFC 7009 revocation and RFC 7662 introspection for resource servers.
//! - `clients`: pre-registered confidential clients ([`config`]), Dynamic Client Registration
//!   (RFC 7591, throttled per address) and clients identified by an `https://` URL to their
//!   metadata document ([`client_documents`], fetched with SSRF protection); exact redirect
//!   URIs, loopback with any port.
//! - `store`: everything kept in PostgreSQL, secrets as digests only.
//! - `throttle`: brute-force limits on sign-in, per account and per address.
//!
//! Every access token is bound to one resource (RFC 8707): the REST API accepts only tokens
//! whose resource is `<issuer>/api/v1` (see `http::auth`), and a resource server learns through
//! introspection whether a token was issued for it.

mod authorize;
pub mod client_documents;
mod clients;
pub mod config;
mod error;
pub mod metadata;
mod params;
pub(crate) mod store;
mod throttle;
mod token;

use axum::Router;
use axum::routing::{get, post};

pub use config::{OAuthSettings, PreRegisteredClient};
pub use error::OAuthError;
pub use store::ACCESS_TOKEN_PREFIX;
pub use token::ACCESS_TOKEN_TYPE;

use crate::http::AppState;

/// The authorization server's state: settings, throttling, and the fetched client documents.
#[derive(Debug)]
pub struct OAuthServer {
    pub settings: OAuthSettings,
    throttle: throttle::SignInThrottle,
    registrations: throttle::RegistrationThrottle,
    documents: client_documents::ClientDocuments,
}

impl OAuthServer {
    pub fn new(settings: OAuthSettings) -> Self {
        let documents = client_documents::ClientDocuments::new(&settings.client_documents);
        Self {
            settings,
            throttle: throttle::SignInThrottle::default(),
            registrations: throttle::RegistrationThrottle::default(),
            documents,
        }
    }
}

/// The authorization server's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(metadata::METADATA_PATH, get(metadata::metadata))
        .route("/oauth/authorize", get(authorize::authorize))
        .route("/oauth/sign-in", post(authorize::sign_in))
        .route("/oauth/consent", post(authorize::consent))
        .route("/oauth/token", post(token::token))
        .route("/oauth/revoke", post(token::revoke))
        .route("/oauth/introspect", post(token::introspect))
        .route("/oauth/register", post(clients::register))
}
