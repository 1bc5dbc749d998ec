//! The sample monitoring product that both MCP servers serve.
//!
//! - [`domain`]: types, lifecycle rules and storage queries, scoped by organisation. Reused by the
//!   internal MCP server for privileged operations.
//! - [`http`]: the public REST API (`/api/v1`), its authentication, errors and OpenAPI document.
//! - [`oauth`]: the OAuth 2.1 authorization server (sign-in, consent, tokens bound to a resource).
//! - [`seed`]: deterministic, realistic demo data, including the stories an assistant should find.
//! - [`cli`]: the `demo-backend` command line.

pub mod cli;
pub mod domain;
pub mod http;
pub mod oauth;
pub mod seed;

/// The schema's migrations, embedded; tests and other crates run the same ones.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
