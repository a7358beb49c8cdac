"""The MCP SDK's own client against a running gateway's `/mcp`, with a bearer token, in either protocol revision;
and a gateway on a real loopback port in front of an in-process stack whose agents keep notes (the offline demo
model calls the tool a message names, and the example notes server's writes wait for a confirmation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx2
import mcp_types as types
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.app import create_app
from gateway.leaks import leak
from gateway.settings import GatewaySettings
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.runtime.harness import tools_file
from tests.support.grpc_helpers import principal_metadata
from tests.support.stack import Stack, running_stack

LEGACY = "legacy"  # the 2025-11-25 revision: initialize, then a session
MODERN = "2026-07-28"  # stateless: no initialize
MODES = [LEGACY, MODERN]
AGENT = "notes-keeper"  # the dev user's agent with the notes tools (`notes_stack`)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
LISTING = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def mcp_client(
    url: str, token: str, mode: str = LEGACY, *, statuses: list[int] | None = None
) -> AsyncIterator[Client]:
    """The SDK's client; `statuses` (when given) collects the HTTP status of every response it gets."""
    headers = {"Authorization": f"Bearer {token}"}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30.0, read=60.0), event_hooks={"response": [record]}
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def data(result: types.CallToolResult) -> dict[str, Any]:
    """A tool result's structured content (every Steward tool answers with some). An error's message must show
    no internal address, port, gRPC text, traceback or path (`gateway.leaks`), as HTTP error texts must not."""
    assert isinstance(result.structured_content, dict), result
    error = result.structured_content.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        assert leak(error["message"]) is None, error
    return result.structured_content


def ok(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result
    return data(result)


def refused(result: types.CallToolResult) -> str:
    """The stable reason of a tool result that must be an error."""
    assert result.is_error, result
    reason: str = data(result)["error"]["reason"]
    return reason


@asynccontextmanager
async def serving(settings: GatewaySettings) -> AsyncIterator[tuple[web.AppRunner, str]]:
    """A gateway on a real loopback port (as `gateway/server.py` runs it: handlers are not cancelled when their
    client leaves), and its base URL."""
    runner = web.AppRunner(create_app(settings), handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Mcp:
    stack: Stack
    base: str
    http: aiohttp.ClientSession  # Steward's HTTP API as the dev user

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def token(self) -> str:
        return self.stack.dev_token

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.base + path, params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.post(self.base + path, json=body or {}) as response:
            assert response.status in (200, 201, 202), await response.text()
            return await response.json()


@asynccontextmanager
async def notes_stack(directory: Path, **gateway_settings: object) -> AsyncIterator[Mcp]:
    """An in-process stack whose runtime has the example notes server, the dev user's `AGENT`, and a gateway."""
    runtime = {"tools_file": str(tools_file(directory, directory / "notes.db")), "sweep_interval": 0.5}
    async with running_stack(directory, runtime=runtime) as stack:
        settings = stack.gateway_settings(**gateway_settings)
        async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
            agent = agent_pb2.Agent(
                name=AGENT,
                system_prompt="You keep notes.",
                model_route="demo",
                tools=["notes.*"],
                approval_policy=agent_pb2.ApprovalPolicy(mode=agent_pb2.RUN_MODE_INTERACTIVE),
            )
            await store_grpc.AgentServiceStub(channel).CreateAgent(
                store_pb.CreateAgentRequest(agent=agent),
                metadata=principal_metadata(stack.secret, settings.dev_user_id),
            )
        async with (
            serving(settings) as (_runner, base),
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.dev_token}"}) as http,
        ):
            yield Mcp(stack, base, http)
