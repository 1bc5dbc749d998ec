//! internal-host's integration tests: one binary, modules by feature, against PostgreSQL from the
//! harness and the real internal-mcp served over HTTP.

mod agent;
mod database;
mod investigations;
mod llm_anthropic;
mod llm_openai;
mod mcp;
mod scripted_model;
mod servers;
mod support;
mod web;
mod web_investigations;
mod web_sse;
mod web_support;
