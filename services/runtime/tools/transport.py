"""Transports to MCP servers, wrapped so the connection task learns when a server has gone away."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from mcp import StdioServerParameters, stdio_client
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from services.runtime.tools.config import HttpServerConfig, ServerConfig, StdioServerConfig

HTTP_READ_TIMEOUT = 300.0
"""Bound on one read of an HTTP response stream; per-call timeouts are shorter."""


class EndWatch:
    """A transport read stream that reports its end: the server has gone away (or we closed it)."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:  # the SDK reads the sender's contextvars snapshot from here
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)


@asynccontextmanager
async def watched(
    transport: AbstractAsyncContextManager[TransportStreams], on_end: Callable[[], None]
) -> AsyncIterator[TransportStreams]:
    async with transport as (read_stream, write_stream):
        yield EndWatch(read_stream, on_end), write_stream


@asynccontextmanager
async def _http_transport(config: HttpServerConfig) -> AsyncIterator[TransportStreams]:
    timeout = httpx2.Timeout(config.connect_timeout, read=HTTP_READ_TIMEOUT)
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


def open_transport(config: ServerConfig) -> AbstractAsyncContextManager[TransportStreams]:
    if isinstance(config, StdioServerConfig):
        # Only config.env (over the SDK's small safe set) reaches the child: nothing else leaks.
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=dict(config.env), cwd=config.cwd
        )
        return stdio_client(params, errlog=sys.stderr)
    return _http_transport(config)
