//! internal-mcp's integration tests: the real app over real HTTP, an rmcp client, and PostgreSQL
//! from the test harness (one binary, modules inside, to keep link times down). The attack
//! corpus runs against the internal-mcp binary in a process of its own, whose memory it measures.

mod analytics;
mod attacks;
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
