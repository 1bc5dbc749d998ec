//! internal-mcp: the product-internal MCP server, inside the backend's network.
//!
//! It reads PostgreSQL directly for data-intensive work, trusts only internal service credentials,
//! and performs privileged operations through demo-backend's domain layer (see ARCHITECTURE.md).
//! Its capabilities arrive with its own issue; until then this crate holds no code.
