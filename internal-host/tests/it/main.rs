//! internal-host's integration tests: one binary, modules by feature, against PostgreSQL from the
//! harness and the real internal-mcp served over HTTP.

mod database;
mod investigations;
mod mcp;
mod support;
