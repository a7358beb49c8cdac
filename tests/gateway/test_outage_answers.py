"""Dependencies down, end to end: a gateway whose store and runtime addresses answer nothing (the rest of the stack
real and up) answers 503 with `Retry-After` and a detail that names the kind of failure, never an address or gRPC's
own text; in problem+json on the REST API, in OpenAI's shape under /v1; and /readyz names those services down.

A decision made while the confirm service is away is refused the same way, and nothing is decided.

The gateways here are their own, so the session's shared stack and gateway stay untouched."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.leaks import leak
from tests.support.stack import Stack, runtime_confirmation

Client = TestClient[web.Request, web.Application]


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then freed (so the refusal names a real-looking port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def storeless(stack: Stack) -> AsyncIterator[Client]:
    """A gateway whose store and runtime are unreachable (no run starts in the shared stack behind its back)."""
    settings = stack.gateway_settings(
        store_address=f"127.0.0.1:{_closed_port()}",
        runtime_address=f"127.0.0.1:{_closed_port()}",
        upstream_timeout=5.0,
        reconnect_wait=0.3,  # calls wait this long for a service that stays away (`steward.rpc.readiness`)
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1", port=0)) as client:
        yield client


def _retry_after(response: ClientResponse) -> int:
    value = response.headers.get("Retry-After", "")
    assert value.isdigit(), dict(response.headers)
    return int(value)


async def test_rest_answers_503_with_retry_after_and_a_clean_detail(storeless: Client, auth: dict[str, str]) -> None:
    response = await storeless.get("/api/v1/conversations", headers=auth)
    body = await response.json()
    assert response.status == 503, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert body["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert 1 <= _retry_after(response) <= 60
    assert leak(body["detail"]) is None, body["detail"]
    assert "store" in body["detail"]


async def test_openai_answers_503_in_its_shape_with_retry_after(storeless: Client, auth: dict[str, str]) -> None:
    request = {"model": "steward", "messages": [{"role": "user", "content": "hello"}]}
    response = await storeless.post("/v1/chat/completions", json=request, headers=auth)
    body = await response.json()
    assert response.status == 503, body
    assert body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    assert body["error"]["type"] == "server_error"
    assert 1 <= _retry_after(response) <= 60
    assert leak(body["error"]["message"]) is None, body["error"]["message"]
    assert "runtime" in body["error"]["message"]


async def test_readiness_names_the_services_down(storeless: Client) -> None:
    response = await storeless.get("/readyz")
    body = await response.json()
    assert (response.status, body["ready"]) == (503, False)
    down = {name for name, state in body["services"].items() if state != "serving"}
    assert down == {"store", "runtime"}, body
    assert body["services"]["store"].startswith("unreachable")


async def test_a_decision_while_confirm_is_away_is_503_and_decides_nothing(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    confirmation = await runtime_confirmation(stack)
    settings = stack.gateway_settings(
        confirm_address=f"127.0.0.1:{_closed_port()}", upstream_timeout=5.0, reconnect_wait=0.3
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1", port=0)) as confirmless:
        decision = {"decision": {"outcome": "approve"}}
        url = f"/api/v1/confirmations/{confirmation.id}/decision"
        response = await confirmless.post(url, json=decision, headers=auth)
        body = await response.json()
    assert response.status == 503, body
    assert body["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert 1 <= _retry_after(response) <= 60
    assert leak(body["detail"]) is None, body["detail"]
    assert "confirm" in body["detail"]
    # Nothing was decided: the confirmation is still pending, and the decision can be made once confirm is back.
    pending = await gateway.get(f"/api/v1/confirmations/{confirmation.id}", headers=auth)
    assert (await pending.json())["state"] == "pending"
    decided = await gateway.post(url, json=decision, headers=auth)
    assert decided.status == 200, await decided.text()
