"""Run an ASGI application (the MCP SDK's streamable HTTP transport) inside an aiohttp handler.

aiohttp hands a handler a request and takes a response back; ASGI hands the application `receive` and
`send` callables. This bridge connects the two for one HTTP request:

- `receive` yields the request body as `http.request` messages, chunk by chunk. Once the body is read it
  **blocks** until the client has gone or the response is complete, and then returns `http.disconnect`.
  The SDK watches `receive` to notice a client leaving; a `receive` that returned at once (as
  `aiohttp-asgi`'s does) would make it spin. aiohttp has no disconnect callback, so the bridge checks the
  connection every `poll_seconds` while it waits, and learns at once when a write finds it closed.
- `send` turns `http.response.start` and `http.response.body` into an aiohttp response. A response sent
  in one body message becomes a plain `web.Response` returned to aiohttp (so the gateway's middlewares
  still add their headers); a response in several messages is a `web.StreamResponse` written chunk by
  chunk as the application sends them, so SSE streams pass through unbuffered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

POLL_SECONDS = 0.5
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer
CHUNK_BYTES = 64 * 1024
# Hop-by-hop headers are aiohttp's to write; copying the application's would duplicate or contradict them.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"})


_WINDING_DOWN: set[asyncio.Task[None]] = set()  # applications still finishing after aiohttp cancelled their handler


def _wound_down(task: asyncio.Task[None]) -> None:
    _WINDING_DOWN.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("asgi_app_failed_after_disconnect", error_type=type(task.exception()).__name__)


def _scope(request: web.Request, extra: dict[str, Any]) -> Scope:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.partition("?")[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
        "state": {},
        **extra,
    }


class AsgiBridge:
    """One aiohttp request served by an ASGI application."""

    def __init__(self, request: web.Request, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._request = request
        self._poll = poll_seconds
        self._body_done = False
        self._finished = asyncio.Event()  # the response is complete, or the client is gone
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._response: web.StreamResponse | None = None
        self._eof = False
        self._left = False  # the client went away before the response was complete
        self.receive_calls = 0  # how often the application asked (a spinning one would ask without end)

    @property
    def client_gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing() or self._request.content.exception() is not None

    async def receive(self) -> Message:
        self.receive_calls += 1
        if not self._body_done:
            try:
                chunk = await self._request.content.readany()
            except OSError:  # the connection was lost mid-body (ConnectionResetError and the like)
                self._body_done = True
                self._left = True
                self._finished.set()
                return {"type": "http.disconnect"}
            self._body_done = self._request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not self._body_done}
        while not self._finished.is_set() and not self.client_gone:
            try:
                async with asyncio.timeout(self._poll):
                    await self._finished.wait()
            except TimeoutError:
                pass
        if not self._finished.is_set():
            self._left = True
        self._finished.set()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = int(message["status"])
            self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.lower() not in _HOP_BY_HOP
            ]
            if any(n.lower() == "content-type" and v.startswith("text/event-stream") for n, v in self._headers):
                await self._stream()  # an event stream starts now: its first event may be long in coming
            return
        if kind != "http.response.body" or self._finished.is_set():
            return  # trailers and the like are not used; nothing is sent after the end or to a gone client
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._response is None and not more:
            headers = [(name, value) for name, value in self._headers if name.lower() != "content-length"]
            self._response = web.Response(status=self._status, body=body, headers=headers)
            self._finished.set()
            return
        try:
            await self._stream()
            if self._finished.is_set() or self._response is None:
                return
            if body:
                await self._response.write(body)
            if not more:
                self._eof = True
                await self._response.write_eof()
                self._finished.set()
        except OSError:
            # The client left: say so to the application's next receive(); it stops sending then.
            self._left = True
            self._finished.set()

    async def _stream(self) -> None:
        """Start the streamed response (its status and headers go out now), unless it has started."""
        if self._response is None:
            self._response = web.StreamResponse(status=self._status, headers=self._headers)
            try:
                await self._response.prepare(self._request)
            except OSError:
                self._left = True
                self._finished.set()

    async def run(self, app: AsgiApp, extra_scope: dict[str, Any]) -> web.StreamResponse:
        """Serve the request with `app`; the response aiohttp should finish (or has streamed)."""

        async def serve() -> None:
            await app(_scope(self._request, extra_scope), self.receive, self.send)

        task = asyncio.create_task(serve())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # aiohttp cancels a handler whose client left when `handler_cancellation` is on. An ASGI application is
            # told by `http.disconnect` instead, never by cancellation (the MCP SDK would drop a session whose
            # opening request was cancelled): tell it so, and let it finish on its own.
            self._finished.set()
            _WINDING_DOWN.add(task)
            task.add_done_callback(_wound_down)
            raise
        self._finished.set()
        if self._response is None:
            if self._left or self.client_gone:
                log.debug("asgi_client_left_before_response", path=self._request.path)
                return web.Response(status=CLIENT_CLOSED_REQUEST)  # nobody receives it; the access log records it
            log.error("asgi_app_sent_no_response", path=self._request.path)
            raise RuntimeError("the MCP transport sent no response")
        if self._response.prepared and not self._eof:  # the application ended a stream without a last message
            self._eof = True
            with contextlib.suppress(OSError):
                await self._response.write_eof()
        return self._response
