"""The smoke run's MCP client: calls one tool on each MCP server of a running demo, with the
official MCP Python SDK over Streamable HTTP, and one REST endpoint. Exits non-zero on any failure.

Usage: smoke_client.py API_URL EXTERNAL_MCP_URL INTERNAL_MCP_URL
with the API token in DEMO_API_TOKEN and the internal credential in DEMO_INTERNAL_CREDENTIAL.
"""

import asyncio
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def call_tool(url: str, credential: str, tool: str, arguments: dict) -> dict:
    headers = {"Authorization": f"Bearer {credential}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                if tool not in tools:
                    raise SystemExit(f"smoke: {url} does not offer {tool}; it offers {sorted(tools)}")
                result = await session.call_tool(tool, arguments)
                if result.is_error:
                    raise SystemExit(f"smoke: {tool} at {url} failed: {result.content}")
                if result.structured_content is None:
                    raise SystemExit(f"smoke: {tool} at {url} returned no structured content")
                return result.structured_content


async def main() -> None:
    api, external, internal = sys.argv[1:4]
    token = os.environ["DEMO_API_TOKEN"]
    credential = os.environ["DEMO_INTERNAL_CREDENTIAL"]

    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(f"{api}/api/v1/services", headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        services = response.json()["items"]
    if not services:
        raise SystemExit("smoke: the REST API lists no services for a seeded user")
    print(f"smoke: REST API GET /api/v1/services: {len(services)} services")

    listed = await call_tool(external, token, "find_services", {"limit": 50})
    names = {item["name"] for item in listed["services"]}
    if names != {service["name"] for service in services}:
        raise SystemExit(f"smoke: external-mcp find_services disagrees with the API: {sorted(names)}")
    print(f"smoke: external-mcp find_services: {len(names)} services, the same as the API")

    counted = await call_tool(internal, credential, "run_select", {"sql": "SELECT count(*) AS services FROM services"})
    rows = counted["rows"]
    if rows != [[len(services)]]:
        raise SystemExit(f"smoke: internal-mcp run_select counted {rows}, the API lists {len(services)}")
    print(f"smoke: internal-mcp run_select: {rows}, the same as the API")


def run() -> None:
    try:
        asyncio.run(main())
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap the one failure that matters; say it in one line.
        while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
            group = group.exceptions[0]
        if isinstance(group, SystemExit):
            raise group from None
        raise SystemExit(f"smoke: {group!r}") from None


run()
