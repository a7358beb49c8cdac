"""A loopback TCP proxy that misbehaves on request, put between two of Steward's processes.

Its mode applies to every connection, open or new, and can be changed at any time:

- `PASS`: bytes flow both ways;
- `DELAY`: each chunk is held `delay` seconds before it is forwarded (both ways);
- `BLACKHOLE`: connections are accepted and kept, nothing is forwarded either way (a partition: the peer's
  keepalive or deadline must notice);
- `RESET`: new connections are reset at once, and open ones are reset when the mode is set;
- `DROP_RESPONSE`: the client's bytes reach the server, the server's replies are thrown away (a write that is
  committed but reported as a timeout).

Leaving `BLACKHOLE` or `DROP_RESPONSE` resets the connections that were open under it: the bytes they lost leave
their HTTP/2 state unusable, as a real network path that lost packets for seconds would have its connection torn
down by the peers' keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "Mode", "fault_proxy"]

_CHUNK = 65536


class Mode(enum.Enum):
    PASS = "pass"  # noqa: S105 - a mode, not a password
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    DROP_RESPONSE = "drop_response"


_LOSSY = {Mode.BLACKHOLE, Mode.DROP_RESPONSE}


@dataclass(eq=False)  # kept in a set: hashed by identity
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:`port` (0 picks one) and forwards to `target` ("host:port")."""

    def __init__(self, target: str, port: int = 0) -> None:
        host, _, target_port = target.rpartition(":")
        self._target = (host, int(target_port))
        self.port = port
        self.mode = Mode.PASS
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self.dropped_bytes = 0  # replies thrown away under DROP_RESPONSE
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()  # cleared while BLACKHOLE holds every byte
        self._flowing.set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        tasks = [task for link in self._links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def set(self, mode: Mode, *, delay: float = 0.0) -> None:
        """Switch every connection to `mode` (`delay` in seconds for DELAY)."""
        leaving_lossy = self.mode in _LOSSY and mode not in _LOSSY
        self.mode, self.delay = mode, delay
        if mode is Mode.BLACKHOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode is Mode.RESET or leaving_lossy:
            for link in list(self._links):
                link.reset()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode is Mode.RESET:
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            try:
                server_reader, link.server = await asyncio.open_connection(*self._target)
            except OSError:
                link.reset()  # as the target itself would: refused
                return
            link.tasks = [
                asyncio.create_task(self._pump(reader, link.server, upstream=True)),
                asyncio.create_task(self._pump(server_reader, writer, upstream=False)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.reset()
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            self._links.discard(link)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await source.read(_CHUNK):
                await self._flowing.wait()  # held, as a partitioned path holds it, until the mode changes
                if self.mode is Mode.DROP_RESPONSE and not upstream:
                    self.dropped_bytes += len(chunk)
                    continue
                if self.mode is Mode.DELAY and self.delay > 0:
                    await asyncio.sleep(self.delay)
                sink.write(chunk)
                await sink.drain()


@asynccontextmanager
async def fault_proxy(target: str, port: int = 0) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(target, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
