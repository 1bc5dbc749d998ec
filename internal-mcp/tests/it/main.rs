//! internal-mcp's integration tests: the real app over real HTTP, an rmcp client, and PostgreSQL
//! from the test harness (one binary, modules inside, to keep link times down). The attack
//! corpus, which measures the process's memory, runs in a process of its own (`tests/memory`).

mod analytics;
mod audit;
mod auth;
mod confirmation;
mod discovery;
mod endpoints;
mod select;
mod startup;
mod starvation;
mod support;
mod tenancy;
