//! internal-mcp: the product-internal MCP server, inside the backend's network.
//!
//! It reads PostgreSQL directly for data-intensive work, trusts only internal service credentials,
//! and performs privileged operations through demo-backend's domain layer (see ARCHITECTURE.md).

pub mod admission;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod database;
pub mod error;
pub mod hardening;
pub mod keys;
pub mod logging;
pub mod operations;
pub mod policy;
pub mod reader;
pub mod roles;
pub mod schema;
pub mod server;
mod text;

pub use app::{AppState, router, serve};
pub use config::Config;
pub use error::Error;
