//! internal-host: the product's own AI assistant, an MCP host (see ARCHITECTURE.md).
//!
//! It reaches product data only through MCP servers, first of all internal-mcp over Streamable
//! HTTP, with a short-lived credential minted per request for the signed-in user. Its own data
//! (sessions, conversations, turns, the event log, approvals) lives in its own schema, owned by its
//! own database role, which has no privilege on the product's tables.

pub mod agent;
pub mod app;
pub mod cli;
pub mod config;
pub mod conversations;
pub mod credentials;
pub mod database;
pub mod error;
pub mod events;
pub mod investigations;
pub mod llm;
pub mod mcp;
pub mod servers;
pub mod session;
pub mod sign_in;
pub mod turns;
pub mod web;

pub use app::{AppState, router, serve};
pub use config::Config;
pub use error::Error;
