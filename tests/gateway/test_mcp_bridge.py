"""The aiohttp-to-ASGI bridge under `/mcp` (gateway/mcp/bridge.py), served over real loopback HTTP with small ASGI
applications of the tests' own: a stream passes through chunk by chunk, a waiting `receive()` neither returns
at once (a caller would spin) nor misses the client leaving, a one-message response is a plain aiohttp
response that the middlewares can still add headers to, and a client that leaves before any response ends the
request quietly (the SDK's own behaviour then: tests/gateway/test_mcp_sessions.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.mcp.bridge import AsgiApp, AsgiBridge, Message, Receive, Scope, Send

SSE = [(b"content-type", b"text/event-stream")]


@dataclass
class Outcomes:
    """How the handlers ended (a status, or the name of what they raised), and the server's port."""

    items: list[int | str] = field(default_factory=list)
    added: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def add(self, outcome: int | str) -> None:
        self.items.append(outcome)
        self.added.set()


@asynccontextmanager
async def serving(
    app: AsgiApp,
    bridges: list[AsgiBridge] | None = None,
    *,
    cancel_handlers: bool = False,
    outcomes: Outcomes | None = None,
) -> AsyncIterator[aiohttp.ClientSession]:
    """`app` behind the bridge; `outcomes` collects each handler's status, or the name of what it raised."""

    async def handler(request: web.Request) -> web.StreamResponse:
        bridge = AsgiBridge(request, poll_seconds=0.05)
        if bridges is not None:
            bridges.append(bridge)
        return await bridge.run(app, {"marker": "extra"})

    @web.middleware
    async def stamp(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        try:
            response = await handler(request)
        except BaseException as exc:
            if outcomes is not None:
                outcomes.add(type(exc).__name__)
            raise
        if outcomes is not None:
            outcomes.add(response.status)
        if not response.prepared:  # as the gateway's request-id middleware does
            response.headers["X-Stamped"] = "yes"
        return response

    web_app = web.Application(middlewares=[stamp])
    web_app.router.add_route("*", "/", handler)
    # As the gateway runs (gateway/server.py): aiohttp does not cancel a handler whose client left
    # (aiohttp's TestServer would, and so hide what the bridge must notice itself).
    runner = web.AppRunner(web_app, handler_cancellation=cancel_handlers)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    if outcomes is not None:
        outcomes.port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(base_url=base) as client:
            yield client
    finally:
        await runner.cleanup()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def test_a_stream_passes_through_chunk_by_chunk() -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: second\n\n", "more_body": False})

    async with serving(app) as client, asyncio.timeout(10):
        response = await client.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert await response.content.readuntil(b"\n\n") == b"data: first\n\n"  # before the second is even made
        assert not release.is_set()
        release.set()
        assert await response.content.read() == b"data: second\n\n"


async def test_an_event_stream_sends_its_headers_before_its_first_event() -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await release.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(app) as client, asyncio.timeout(10):
        response = await client.get("/")
        assert response.status == 200  # the headers came while the application still waits
        release.set()
        assert await response.content.read() == b""


@pytest.mark.parametrize("cancel_handlers", [False, True])
async def test_receive_waits_quietly_and_reports_the_client_leaving(cancel_handlers: bool) -> None:
    bridges: list[AsgiBridge] = []
    seen: list[Message] = []
    left = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["method"] == "GET"
        assert scope["marker"] == "extra"
        await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        try:
            seen.append(await receive())  # blocks until the client is gone
        finally:
            left.set()

    async with serving(app, bridges, cancel_handlers=cancel_handlers) as client, asyncio.timeout(10):
        response = await client.get("/")
        assert await response.content.readuntil(b"\n\n") == b": open\n\n"
        await asyncio.sleep(0.3)  # six polls long
        (bridge,) = bridges
        assert bridge.receive_calls == 2  # the body, then the one waiting call: nothing spins
        assert not left.is_set()
        response.close()
        await left.wait()
    assert seen == [{"type": "http.disconnect"}]  # told, not cancelled, whether aiohttp cancels handlers or not
    assert bridge.receive_calls == 2


async def test_a_request_body_arrives_whole_and_a_one_message_answer_is_a_plain_response() -> None:
    payload = bytes(range(256)) * 2048  # 512 KiB: several chunks

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        answer = json.dumps({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        assert await receive() == {"type": "http.disconnect"}  # the response is complete: receive says so at once

    async with serving(app) as client, asyncio.timeout(10):
        response = await client.post("/", data=payload)
        assert response.status == 201
        assert response.headers["X-Stamped"] == "yes"  # not sent before the middlewares saw it
        assert await response.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


@pytest.mark.parametrize("cancel_handlers", [False, True])
async def test_a_client_that_leaves_mid_body_ends_the_request_quietly(cancel_handlers: bool) -> None:
    seen: list[Message] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (message := await receive())["type"] == "http.request":
                pass
            seen.append(message)  # the body never ended: the client is gone; nothing to answer
        finally:
            done.set()

    outcomes = Outcomes()
    with structlog.testing.capture_logs() as logs:
        async with serving(app, outcomes=outcomes, cancel_handlers=cancel_handlers), asyncio.timeout(10):
            _reader, writer = await asyncio.open_connection("127.0.0.1", outcomes.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.transport.abort()
            await done.wait()
            await outcomes.added.wait()
    assert seen == [{"type": "http.disconnect"}]
    # Without handler cancellation the handler returns a 499 nobody receives; with it, aiohttp cancelled it.
    assert outcomes.items == (["CancelledError"] if cancel_handlers else [499])
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
