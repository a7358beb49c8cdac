"""A small SSE reader for tests (the wire format, parsed by the spec's rules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient


@dataclass
class SseEvent:
    id: str
    event: str
    data: str


def parse_sse(text: str) -> list[SseEvent]:
    """Parse a complete SSE body; comments (heartbeats) are skipped."""
    events: list[SseEvent] = []
    current_id, current_event = "", "message"
    data_lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data_lines:
                events.append(SseEvent(current_id, current_event, "\n".join(data_lines)))
            current_event, data_lines = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            current_id = value
        elif field == "event":
            current_event = value
        elif field == "data":
            data_lines.append(value)
    return events


async def read_sse(client: TestClient[Any, Any], path: str, headers: dict[str, str]) -> list[SseEvent]:
    """GET an SSE stream until the server ends it, and parse it."""
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return parse_sse(await response.text())
