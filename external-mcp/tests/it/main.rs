//! Integration tests of external-mcp against a real demo-backend (its binary, on a copy of a
//! seeded database from the harness's PostgreSQL), through real MCP clients: in process over a
//! pipe, over stdio with the real binary, and over Streamable HTTP. One test binary for the crate
//! keeps link times down.

mod backend;
mod clients;
mod definitions;
mod failures;
mod http;
mod in_process;
mod protocol;
mod schema;
mod stdio;
mod writes;
