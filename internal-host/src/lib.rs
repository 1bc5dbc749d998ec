//! internal-host: the product's own AI assistant, an MCP host with a web chat UI, an LLM loop and
//! AgenticOps automation, talking to internal-mcp (see ARCHITECTURE.md). It arrives with its own
//! issue; until then this crate holds no code.
