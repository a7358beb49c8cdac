"""Agents left on a route that no longer exists (gateway/routes/route_orphans.py): warned about at start, and listed
to administrators over HTTP; the check at start waits for a provider that is away, and serving does not wait for it.

The agents are made in the store directly, which does not check routes (the gateway does), as if the routes file had
lost their route after they were made.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import grpc
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes import route_orphans
from gateway.routes.route_orphans import CHECK_TASK
from steward.auth import METADATA_KEY, TokenSigner
from steward.errors import Reason
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.gateway_http import answer, refusal
from tests.support.stack import Stack, store_user_token

Client = TestClient[Any, Any]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _agents(stack: Stack, owner: str, routes: dict[str, str]) -> dict[str, str]:
    """Make the agents `routes` maps by name to their route for `owner`, in the store; their ids by name."""
    token = TokenSigner(stack.secret, issuer="tests").mint(owner)
    ids: dict[str, str] = {}
    async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
        for name, route in routes.items():
            reply = await store_grpc.AgentServiceStub(channel).CreateAgent(
                store_pb.CreateAgentRequest(agent=agent_pb2.Agent(name=name, model_route=route)),
                metadata=((METADATA_KEY, token),),
            )
            ids[name] = reply.agent.id
    return ids


async def test_agents_on_a_route_that_went_away_are_warned_about_at_start_and_listed_to_admins(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    gone, unknown_provider = f"gone-{tag}", f"nowhere-{tag}/model"
    owner = f"owner-{tag}"
    ids = await _agents(
        stack,
        owner,
        {"one": gone, "two": gone, "three": unknown_provider, "fine": "demo", "direct": f"openai/gpt-{tag}"},
    )
    expected = [
        {
            "model_route": gone,
            "agents": 2,
            "examples": [{"id": ids[name], "name": name, "owner": owner} for name in ("one", "two")],
        },
        {
            "model_route": unknown_provider,
            "agents": 1,
            "examples": [{"id": ids["three"], "name": "three", "owner": owner}],
        },
    ]

    with structlog.testing.capture_logs() as logs:
        app = create_app(stack.gateway_settings())
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)):
            found = await app[CHECK_TASK]
    assert found is not None
    orphans, truncated = found
    assert not truncated
    mine = [orphan for orphan in orphans if orphan["model_route"] in (gone, unknown_provider)]
    assert mine == expected  # the agents on `demo` and on a configured provider's model are fine
    warnings = [entry for entry in logs if entry["event"] == "agents_on_unknown_routes"]
    assert [entry["log_level"] for entry in warnings] == ["warning"]  # one warning, naming every route
    logged = {route["model_route"]: route for route in warnings[0]["routes"]}
    assert logged[gone] == {
        "model_route": gone,
        "agents": 2,
        "examples": [f"one (owner {owner})", f"two (owner {owner})"],
    }
    assert logged[unknown_provider]["agents"] == 1

    listed = await answer(await gateway.get("/api/v1/admin/orphaned-agents", headers=auth), 200)  # the dev user
    assert [orphan for orphan in listed["routes"] if orphan["model_route"] in (gone, unknown_provider)] == expected
    someone = {"Authorization": f"Bearer {await store_user_token(stack)}"}
    refused = await gateway.get("/api/v1/admin/orphaned-agents", headers=someone)
    assert await refusal(refused, 403) == Reason.PERMISSION_DENIED


async def test_the_check_waits_for_an_unreachable_provider_while_the_gateway_serves(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route_orphans, "RETRY_SECONDS", (0.05,))
    port = _closed_port()
    app = create_app(stack.gateway_settings(provider_address=f"127.0.0.1:{port}", reconnect_wait=0.2))
    with structlog.testing.capture_logs() as logs:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert (await client.get("/healthz")).status == 200  # serving does not wait for the check
            for _ in range(100):
                if any(entry["event"] == "agent_routes_check_waits" for entry in logs):
                    break
                await asyncio.sleep(0.05)
            assert not app[CHECK_TASK].done()
            provider = await stack.starters["provider"](f"127.0.0.1:{port}")  # the provider comes (back)
            try:
                found = await asyncio.wait_for(app[CHECK_TASK], 30)
            finally:
                await provider.stop(0)
    assert found is not None  # compared once it answered
    assert any(entry["event"] == "agent_routes_check_waits" for entry in logs)
