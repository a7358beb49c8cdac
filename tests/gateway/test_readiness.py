"""Readiness: /readyz reports every service the gateway needs, and the MCP endpoint's session manager."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gateway.mcp.endpoint import ENDPOINT
from tests.support.mcp_client import serving
from tests.support.stack import Stack


async def test_readiness_follows_the_mcp_endpoint(stack: Stack) -> None:
    async with serving(stack.gateway_settings()) as (runner, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["services"]["mcp"] == "serving"
        task = runner.app[ENDPOINT].task
        task.cancel()  # the session manager stops (as if it crashed)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with http.get(f"{base}/readyz") as response:
            body = await response.json()
        assert (response.status, body["ready"], body["services"]["mcp"]) == (503, False, "stopped")
        assert all(state == "serving" for name, state in body["services"].items() if name != "mcp")
