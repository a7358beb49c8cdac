"""`/mcp`'s 2025-11-25 sessions and the endpoint's lifetime, over raw HTTP against gateways on real loopback ports
in front of the in-process services: a session serves only the user who opened it (POST, GET and DELETE), each
user holds at most `mcp_max_sessions_per_user` of them (one user at the cap locks nobody else out), a session that
ends frees its place, authentication refuses every method with the RFC 9728 challenge, a client that leaves
before any response ends its request quietly, and a session manager that stopped is said, not a 500 per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.mcp.endpoint import ENDPOINT
from gateway.mcp.metadata import MCP_PATH, WELL_KNOWN
from tests.support.mcp_client import ACCEPT, INITIALIZE, LISTING, MODERN, serving
from tests.support.stack import Stack, running_stack, store_user_token

IN_SESSION = {"MCP-Protocol-Version": "2025-11-25"}


def _as(token: str, **more: str) -> dict[str, str]:
    return {**ACCEPT, "Authorization": f"Bearer {token}", **more}


async def _open(http: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientResponse:
    """An initialize request; the response is read whole."""
    async with http.post(f"{base}/mcp", json=INITIALIZE, headers=_as(token)) as response:
        await response.read()
        return response


async def _session(http: aiohttp.ClientSession, base: str, token: str) -> str:
    response = await _open(http, base, token)
    assert response.status == 200, await response.text()
    return response.headers["Mcp-Session-Id"]


async def _list(http: aiohttp.ClientSession, base: str, token: str, session: str) -> int:
    """tools/list in `session` as the holder of `token`: its status."""
    headers = _as(token, **IN_SESSION, **{"Mcp-Session-Id": session})
    async with http.post(f"{base}/mcp", json=LISTING, headers=headers) as response:
        await response.read()
        return response.status


def _refused_for_sessions(response: aiohttp.ClientResponse, body: dict[str, Any], cap: int) -> None:
    assert response.status == 429, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert body["reason"] == "RATE_LIMITED"
    assert body["metadata"] == {"limit": "mcp_sessions_per_user", "max_sessions": str(cap)}


async def test_a_user_at_the_session_cap_is_refused_and_another_user_is_not(stack: Stack) -> None:
    a, b = stack.dev_token, await store_user_token(stack)
    async with (
        serving(stack.gateway_settings(mcp_max_sessions_per_user=2)) as (_runner, base),
        aiohttp.ClientSession() as http,
    ):
        first, second = await _session(http, base, a), await _session(http, base, a)
        async with http.post(f"{base}/mcp", json=INITIALIZE, headers=_as(a)) as third:
            _refused_for_sessions(third, await third.json(), 2)
        assert await _session(http, base, b)  # B is not locked out by A
        assert (await _list(http, base, a, first), await _list(http, base, a, second)) == (200, 200)  # at the cap
        headers = _as(a, **IN_SESSION, **{"Mcp-Session-Id": first})
        async with http.delete(f"{base}/mcp", headers=headers) as ended:
            assert ended.status == 200
        assert await _session(http, base, a)  # the ended session's place is free again
        assert (await _open(http, base, a)).status == 429


async def test_concurrent_openings_cannot_overshoot_the_cap(stack: Stack) -> None:
    token = await store_user_token(stack)
    async with (
        serving(stack.gateway_settings(mcp_max_sessions_per_user=2)) as (_runner, base),
        aiohttp.ClientSession() as http,
    ):
        answers = await asyncio.gather(*(_open(http, base, token) for _ in range(6)))
    assert sorted(response.status for response in answers) == [200, 200, 429, 429, 429, 429]


async def test_a_session_that_expires_or_fails_to_open_frees_its_place(stack: Stack) -> None:
    token = await store_user_token(stack)
    settings = stack.gateway_settings(mcp_max_sessions_per_user=1, mcp_session_idle_seconds=0.3)
    async with serving(settings) as (_runner, base), aiohttp.ClientSession() as http:
        # Without a session id only an initialize may open a session: the SDK refuses this one, and opens none.
        async with http.post(f"{base}/mcp", json=LISTING, headers=_as(token)) as refused:
            assert refused.status == 400  # (with the id of the session the SDK discarded at once)
        first = await _session(http, base, token)  # the refused opening holds no place
        deadline = time.monotonic() + 10
        while (response := await _open(http, base, token)).status == 429:  # until the idle session expired
            assert time.monotonic() < deadline, "the idle session never freed its place"
            await asyncio.sleep(0.05)
        assert response.status == 200
        assert await _list(http, base, token, first) == 404  # it is gone indeed


async def test_another_user_can_neither_use_nor_listen_to_nor_end_a_session(stack: Stack) -> None:
    a, b = stack.dev_token, await store_user_token(stack)
    async with (
        serving(stack.gateway_settings(mcp_max_sessions_per_user=1)) as (_runner, base),
        aiohttp.ClientSession() as http,
    ):
        session = await _session(http, base, a)
        as_b = _as(b, **IN_SESSION, **{"Mcp-Session-Id": session})
        async with http.post(f"{base}/mcp", json=LISTING, headers=as_b) as posted:
            assert posted.status == 404
            assert "list_agents" not in await posted.text()
        async with http.get(f"{base}/mcp", headers={**as_b, "Accept": "text/event-stream"}) as listened:
            assert listened.status == 404  # B cannot take over A's stream of server messages
        async with http.delete(f"{base}/mcp", headers=as_b) as ended:
            assert ended.status == 404
        assert await _list(http, base, a, session) == 200  # A's session goes on
        assert (await _open(http, base, a)).status == 429  # and still holds A's one place: B's 404s freed nothing
        as_a = _as(a, **IN_SESSION, **{"Mcp-Session-Id": session})
        async with http.get(f"{base}/mcp", headers={**as_a, "Accept": "text/event-stream"}) as stream:
            assert stream.status == 200
            stream.close()
        async with http.delete(f"{base}/mcp", headers=as_a) as closed:
            assert closed.status == 200
        assert await _list(http, base, a, session) == 404


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_every_method_needs_a_token_with_the_mcp_scope(stack: Stack, gateway: Any, method: str) -> None:
    metadata = f'resource_metadata="{gateway.make_url(WELL_KNOWN + MCP_PATH)}"'
    scoped = await store_user_token(stack, scopes=("runs:read",))
    body = json.dumps(INITIALIZE) if method == "POST" else None
    missing = await gateway.request(method, MCP_PATH, data=body, headers=ACCEPT)
    assert missing.status == 401
    assert (await missing.json())["reason"] == "TOKEN_MISSING"
    assert metadata in missing.headers["WWW-Authenticate"]
    forbidden = await gateway.request(method, MCP_PATH, data=body, headers=_as(scoped))
    assert forbidden.status == 403
    assert (await forbidden.json())["reason"] == "PERMISSION_DENIED"
    assert 'error="insufficient_scope", scope="mcp"' in forbidden.headers["WWW-Authenticate"]
    assert metadata in forbidden.headers["WWW-Authenticate"]


async def test_a_stopped_session_manager_is_logged_and_mcp_answers_503(stack: Stack) -> None:
    async with serving(stack.gateway_settings()) as (runner, base), aiohttp.ClientSession() as http:
        task = runner.app[ENDPOINT].task
        with structlog.testing.capture_logs() as logs:
            task.cancel()
            await asyncio.wait({task})
        assert [(e["event"], e["log_level"]) for e in logs] == [("mcp_session_manager_stopped", "error")]
        async with http.post(f"{base}/mcp", json=INITIALIZE, headers=_as(stack.dev_token)) as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "SHUTTING_DOWN"
        async with http.get(f"{base}/healthz") as health:
            assert health.status == 200  # the rest of the gateway goes on


@pytest.fixture(scope="module")
async def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A stack whose demo model takes about a second to answer."""
    directory: Path = tmp_path_factory.mktemp("slow")
    async with running_stack(directory, demo_token_interval=0.03) as running:
        yield running


async def _leave(port: int, headers: dict[str, str], body: bytes, sent: int, after: float) -> None:
    """Send a request's headers and `sent` bytes of its body, wait, and drop the connection."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode() + body[:sent])
    await writer.drain()
    await asyncio.sleep(after)
    writer.transport.abort()


MODERN_CHAT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "chat",
        "arguments": {"message": "Hello"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}


@pytest.mark.parametrize("case", ["mid-body", "2026-07-28 before the answer"])
async def test_a_client_that_leaves_before_any_response_ends_quietly(
    slow_stack: Stack, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    settings = slow_stack.gateway_settings(mcp_disconnect_poll_seconds=0.05)
    headers = _as(slow_stack.dev_token)
    if case == "mid-body":
        body, sent = json.dumps(INITIALIZE).encode(), 10
    else:
        body = json.dumps(MODERN_CHAT).encode()
        sent = len(body)
        headers |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "chat"}
    caplog.set_level(logging.DEBUG)
    async with serving(settings) as (_runner, base):
        with structlog.testing.capture_logs() as logs:
            await _leave(int(base.rpartition(":")[2]), headers, body, sent, after=0.3)
            deadline = time.monotonic() + 10
            while not any(e["event"] == "http_request" for e in logs):
                assert time.monotonic() < deadline, logs
                await asyncio.sleep(0.05)
    (access,) = [e for e in logs if e["event"] == "http_request"]
    assert (access["path"], access["status"]) == ("/mcp", 499)
    assert [e for e in logs if e["log_level"] in ("error", "critical", "exception")] == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
