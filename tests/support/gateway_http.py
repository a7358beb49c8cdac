"""Gateway test helpers: answers checked for their status, and requests written byte for byte (for what an
HTTP client would not send as given, such as non-ASCII headers)."""

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


async def answer(response: Any, status: int) -> Any:
    """The JSON body of a response that must have `status`."""
    assert response.status == status, await response.text()
    return await response.json()


async def refusal(response: Any, status: int) -> str:
    """The `reason` of a problem+json response that must have `status`."""
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/problem+json")
    reason: str = (await response.json())["reason"]
    return reason
