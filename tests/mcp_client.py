"""The MCP SDK's own client against a running gateway's `/mcp`, with a bearer token, in either protocol revision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

LEGACY = "legacy"  # the 2025-11-25 revision: initialize, then a session
MODERN = "2026-07-28"  # stateless: no initialize
MODES = [LEGACY, MODERN]


@asynccontextmanager
async def mcp_client(url: str, token: str, mode: str = LEGACY) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def data(result: types.CallToolResult) -> dict[str, Any]:
    """A tool result's structured content (every Steward tool answers with some)."""
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def ok(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result
    return data(result)


def refused(result: types.CallToolResult) -> str:
    """The stable reason of a tool result that must be an error."""
    assert result.is_error, result
    reason: str = data(result)["error"]["reason"]
    return reason
