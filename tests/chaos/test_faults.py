"""The chaos suite's fault proxy over a loopback echo server: each mode does to the bytes what it says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from chaos.faults import FaultProxy, Mode, fault_proxy

_WRITERS: list[asyncio.StreamWriter] = []  # every stream a test opened, closed after it


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _WRITERS.append(writer)
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server, fault_proxy(f"127.0.0.1:{port}") as proxy:
            yield proxy
    finally:
        for writer in _WRITERS:
            writer.close()
        _WRITERS.clear()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    _WRITERS.append(writer)
    return reader, writer


async def _was_cut(reader: asyncio.StreamReader) -> bool:
    """The proxy cut the connection: it was reset or ended (the proxy aborts its sockets: the kernel sends a reset
    only when unread bytes remain, an end of stream otherwise), with no byte before."""
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
    assert proxy.connections == 1


async def test_drop_response_counts_the_replies_it_throws_away_and_resets_when_it_ends(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.read(1), 5) == b"a"
    proxy.set(Mode.DROP_RESPONSE)
    writer.write(b"lost")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(4), 0.3)
    assert proxy.dropped_bytes == 4
    proxy.set(Mode.PASS)
    assert await _was_cut(reader)
    reader, writer = await _connect(proxy)  # a new connection works
    writer.write(b"b")
    assert await asyncio.wait_for(reader.read(1), 5) == b"b"


async def test_blackhole_holds_every_byte_until_it_ends(proxy: FaultProxy) -> None:
    proxy.set(Mode.BLACKHOLE)
    reader, writer = await _connect(proxy)  # accepted, as a partitioned path's peer would look
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(4), 0.3)
    assert proxy.dropped_bytes == 0
    proxy.set(Mode.PASS)
    reader, writer = await _connect(proxy)
    writer.write(b"c")
    assert await asyncio.wait_for(reader.read(1), 5) == b"c"


async def test_reset_refuses_new_connections(proxy: FaultProxy) -> None:
    proxy.set(Mode.RESET)
    reader, _ = await _connect(proxy)
    assert await _was_cut(reader)
