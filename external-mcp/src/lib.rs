//! external-mcp: the product-level MCP server, run by the user's own MCP host.
//!
//! It speaks only to demo-backend's public REST API with the user's own token and never touches
//! the database (see ARCHITECTURE.md). Its tools, resources and prompts arrive with its own issue;
//! until then this crate holds no code, so that nothing pretends to work.
