"""A small MCP server over stdio for the host's tests: it reports what the host gave it.

Tools:
- `environment_names` (read-only): the names of the environment variables it was started with,
  so a test can see that the host's own secrets never reach a stdio server.
- `token_matches` (read-only): whether PROBE_TOKEN equals its argument, so a test can see that a
  `${env:NAME}` value arrived without the value ever being printed.
Its first tool's description is PROBE_DESCRIPTION, so a test can change a tool's definition
between two turns. It writes a line to stderr when it starts.
"""

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("probe")
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False)


@server.tool(description=os.environ.get("PROBE_DESCRIPTION", "Lists environment names."),
             annotations=READ_ONLY)
def environment_names() -> str:
    return "\n".join(sorted(os.environ))


@server.tool(description="Says whether PROBE_TOKEN equals the given value.", annotations=READ_ONLY)
def token_matches(value: str) -> str:
    return "yes" if os.environ.get("PROBE_TOKEN") == value else "no"


if __name__ == "__main__":
    print("probe: started", file=sys.stderr, flush=True)
    server.run("stdio")
