//! internal-host's integration tests: one binary, modules by feature, against PostgreSQL from the
//! harness and the real internal-mcp served over HTTP.

mod database;
mod mcp;
mod support;
mod web;
mod web_sse;
mod web_support;
