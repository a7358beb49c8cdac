"""A stdio MCP server whose tool list changes while a session is open, for the tool-list refresh tests.

`reveal(name)` adds a read tool called `name` and announces the change: to `subscriptions/listen`
streams (2026-07-28 sessions) and as `notifications/tools/list_changed` (older sessions).
Run: `python -m tests.tools.changing_mcp`.
"""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("changing")


@server.tool()
async def reveal(name: str, ctx: Context) -> str:
    """Add a read tool called `name`."""

    def revealed() -> str:
        return f"{name} was revealed"

    server.add_tool(revealed, name=name, description="A tool that was not there when the session began.")
    await ctx.notify_tools_changed()
    return f"revealed {name}"


if __name__ == "__main__":
    server.run("stdio")
