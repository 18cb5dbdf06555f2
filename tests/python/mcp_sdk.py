"""The official MCP Python SDK (`mcp`) against `omniroute serve` on the built-in default config:
over streamable HTTP (`<addr>/mcp`) and over stdio (`omniroute mcp --data-dir <the serve's data
dir>`, which bridges to the same server). Each session lists the tools and calls get_health,
simulate_route, route_request, explain_route (on the id route_request returned) and
replay_strategy, asserting on `structured_content` and `is_error`.

Usage: mcp_sdk.py <http://addr> <omniroute binary> <data dir>
"""

import json
import sys
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

# The model (a combo of the built-in default config) the calls route to.
MODEL = "default"

# The tools every session must list and call.
REQUIRED = [
    "omniroute_get_health",
    "omniroute_simulate_route",
    "omniroute_route_request",
    "omniroute_explain_route",
    "omniroute_replay_strategy",
]

class Run:
    def __init__(self, transport: str, session: ClientSession, tools: set[str]) -> None:
        self.transport = transport
        self.session = session
        self.tools = tools
        self.passed = 0

    async def ok(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """The structured output of a call that must succeed."""
        r = await self.session.call_tool(tool, args)
        shown = f"[{self.transport}] {tool}({json.dumps(args)}) -> is_error={r.is_error} " + (
            f"structured={json.dumps(r.structured_content)} content={r.content!r}"
        )
        assert not r.is_error, shown
        out = r.structured_content
        assert isinstance(out, dict) and out, shown
        self.passed += 1
        return out


async def exercise(transport: str, session: ClientSession, base: str) -> Run:
    await session.initialize()
    listed = await session.list_tools()
    tools = {t.name for t in listed.tools}
    run = Run(transport, session, tools)
    for name in REQUIRED:
        assert name in tools, f"[{transport}] {name} is not listed: {sorted(tools)}"
    for t in listed.tools:
        assert t.output_schema, f"[{transport}] {t.name} declares no output schema"
    run.passed += 1

    health = await run.ok("omniroute_get_health", {})
    assert health.get("status") == "ok", health
    assert isinstance(health.get("targets"), list), health

    sim = await run.ok("omniroute_simulate_route", {"model": MODEL, "promptTokenEstimate": 500})
    assert isinstance(sim.get("plan"), list) and sim["plan"], sim

    out = await run.ok(
        "omniroute_route_request",
        {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]},
    )
    assert isinstance(out.get("request_id"), str) and out["request_id"], out
    assert isinstance(out.get("content"), str) and out["content"], out
    rid = out["request_id"]

    explained = await run.ok("omniroute_explain_route", {"requestId": rid})
    assert explained.get("request_id") == rid, explained
    assert isinstance(explained.get("explain"), dict), explained

    report = await run.ok("omniroute_replay_strategy", {"strategy": "round-robin"})
    assert "recorded" in report and "simulated" in report, report

    # A mistake is a tool error the agent can read, not a protocol failure.
    bad = await session.call_tool("omniroute_explain_route", {"requestId": "not-an-id"})
    assert bad.is_error, f"[{transport}] explain_route accepted a bad id: {bad!r}"
    run.passed += 1
    return run


async def over_http(base: str) -> Run:
    async with httpx2.AsyncClient(timeout=30) as http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                return await exercise("http", session, base)


async def over_stdio(base: str, binary: str, data_dir: str) -> Run:
    params = StdioServerParameters(command=binary, args=["mcp", "--data-dir", data_dir])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            return await exercise("stdio", session, base)


async def main(base: str, binary: str, data_dir: str) -> None:
    for run in [await over_http(base), await over_stdio(base, binary, data_dir)]:
        print(f"mcp-sdk [{run.transport}]: {run.passed} passed, 0 failed")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
