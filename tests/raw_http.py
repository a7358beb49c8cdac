"""HTTP requests written byte for byte, for what an HTTP client would not send as given (non-ASCII headers)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient


async def raw_request(client: TestClient[Any, Any], request: bytes) -> bytes:
    """Send `request` (its head ends in a blank line; `Connection: close` is added) and read the whole answer."""
    assert client.server.host is not None
    assert client.server.port is not None
    head, _, body = request.partition(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
