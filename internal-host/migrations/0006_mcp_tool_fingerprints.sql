-- What each MCP server's tools looked like when the host last listed them: a SHA-256 of the
-- description, the input schema and the read-only annotation. A listing whose digest differs from
-- the stored one is a tool that changed its definition since it was last seen (see
-- agent::fingerprints): the user is told, and the tool asks before it runs in that turn.
CREATE TABLE mcp_tool_fingerprints (
    server        text NOT NULL,
    tool          text NOT NULL,
    digest        bytea NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    changed_at    timestamptz,
    PRIMARY KEY (server, tool)
);
