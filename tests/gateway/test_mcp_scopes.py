"""MCP tools and token scopes: a scoped token needs `mcp` to reach /mcp, and each tool's own scope (the one its
HTTP route needs) to use it; a tool it may not use answers a PERMISSION_DENIED tool error and does nothing."""

from __future__ import annotations

import pytest

from gateway.auth import scopes
from gateway.mcp.server import TOOLS
from tests.support.mcp_client import MODES, data, mcp_client, ok, refused, serving
from tests.support.stack import Stack, runtime_confirmation, store_user_token


def test_every_mcp_tool_names_a_known_scope() -> None:
    assert {name: tool.scope in scopes.SCOPES for name, tool in TOOLS.items()} == dict.fromkeys(TOOLS, True)


@pytest.mark.parametrize("mode", MODES)
async def test_a_scoped_token_uses_only_the_tools_its_scopes_allow(stack: Stack, mode: str) -> None:
    reader = await store_user_token(stack, scopes=("mcp", "agents:read", "runs:read"))
    async with serving(stack.gateway_settings()) as (_runner, base), mcp_client(f"{base}/mcp", reader, mode) as client:
        assert "agents" in ok(await client.call_tool("list_agents", {}))
        for tool, arguments, scope in [
            ("chat", {"message": "hello"}, "runs:write"),
            ("list_pending_confirmations", {}, "confirmations:read"),
            ("decide_confirmation", {"confirmation_id": "x", "outcome": "approve"}, "confirmations:decide"),
        ]:
            result = await client.call_tool(tool, arguments)
            assert refused(result) == "PERMISSION_DENIED", tool
            assert data(result)["error"]["metadata"] == {"scope": scope}


async def test_a_token_without_the_decide_scope_cannot_approve_a_confirmation(stack: Stack) -> None:
    confirmation = await runtime_confirmation(stack)
    lister = await store_user_token(stack, scopes=("mcp", "confirmations:read"))
    async with serving(stack.gateway_settings()) as (_runner, base):
        async with mcp_client(f"{base}/mcp", lister) as client:
            arguments = {"confirmation_id": confirmation.id, "outcome": "approve"}
            assert refused(await client.call_tool("decide_confirmation", arguments)) == "PERMISSION_DENIED"
        async with mcp_client(f"{base}/mcp", stack.dev_token) as owner:  # unscoped: the confirmation still waits
            pending = ok(await owner.call_tool("list_pending_confirmations", {}))
    assert confirmation.id in [c["id"] for c in pending["confirmations"]]
