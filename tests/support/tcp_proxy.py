"""A loopback TCP proxy that breaks connections on purpose: it cuts a connection for real (a reset) once the
server has sent it a given number of bytes, or answers a connection itself with a canned HTTP response."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to `target_port`, following `plan` one connection at a time: an int cuts the
    connection after that many bytes from the server, bytes are answered instead of the server; connections past
    the plan are forwarded whole."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.plan: list[int | bytes] = []
        self.connect_times: list[float] = []  # time.monotonic() of each connection
        self.cut_times: list[datetime] = []  # wall-clock time of each cut, to compare with a run's end_time
        self.heads: list[str] = []  # the start of each forwarded request (its request line and headers)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.connect_times)

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (0: a free one; the same port again after `stop`, as a server back from a restart)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connect_times.append(time.monotonic())
        step = self.plan.pop(0) if self.plan else None
        try:
            if isinstance(step, bytes):
                await reader.readuntil(b"\r\n\r\n")  # the request's head (the stream's GET has no body)
                writer.write(step)
                await writer.drain()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            forward = asyncio.get_running_loop().create_task(self._pipe(reader, upstream_writer, record=True))
            try:
                await self._pipe(upstream_reader, writer, step)
            finally:
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)
                upstream_writer.transport.abort()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()  # a clean close (FIN) when the server ended; a cut connection was reset already

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, budget: int | None = None, record: bool = False
    ) -> None:
        sent = 0
        while chunk := await source.read(65536):
            if record and sent == 0:
                self.heads.append(chunk.decode(errors="replace"))
            if budget is not None and sent + len(chunk) >= budget:
                sink.write(chunk[: budget - sent])  # most likely in the middle of a frame
                with contextlib.suppress(ConnectionError):
                    await sink.drain()
                self.cut_times.append(datetime.now(UTC))
                sink.transport.abort()  # a reset, as when a proxy or a network path dies
                return
            sent += len(chunk)
            sink.write(chunk)
            await sink.drain()


def canned_problem(status: int, reason: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 problem+json answer, as a gateway (or a proxy in front of one) would send it."""
    body = f'{{"type": "about:blank", "title": "canned", "status": {status}, "detail": "canned", "reason": "{reason}"}}'
    head = [f"HTTP/1.1 {status} Canned", "Content-Type: application/problem+json", f"Content-Length: {len(body)}"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join([*head, "Connection: close", "", body])).encode()


@asynccontextmanager
async def cutting_proxy(target_port: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
