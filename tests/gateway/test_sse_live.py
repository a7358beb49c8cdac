"""Live run event streams over HTTP through the real stack: a stream cut mid-run and resumed through a second
gateway instance, and content that looks like SSE framing arriving as the payload it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support.gateway_http import answer
from tests.support.sse import SseEvent, parse_sse, read_sse
from tests.support.stack import Stack

Client = TestClient[web.Request, web.Application]
INJECTION = "before\n\nevent: x\ndata: y\n\nid: 999\rlone CR\r\nretry: 1\n: a comment\nafter"
ASK = {
    "name": "lookup",
    "description": "Looks a thing up.",
    "input_schema": {"type": "object", "properties": {"thing": {"type": "string"}}, "required": ["thing"]},
}


@pytest.fixture
async def second_gateway(stack: Stack) -> AsyncIterator[Client]:
    """Another gateway instance on the same services: no state shared with the first but the services'."""
    async with TestClient(TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)) as client:
        yield client


async def _start(gateway: Client, auth: dict[str, str], body: dict[str, Any]) -> tuple[str, str]:
    conversation = await answer(await gateway.post("/api/v1/conversations", json={}, headers=auth), 201)
    created = await answer(
        await gateway.post("/api/v1/runs", json={"conversation_id": conversation["id"], **body}, headers=auth), 202
    )
    return created["run"]["id"], created["events_url"]


async def _read_some(gateway: Client, path: str, auth: dict[str, str], count: int) -> list[SseEvent]:
    """The first `count` events of a live stream; then the client goes away (the connection is closed)."""
    response = await gateway.get(path, headers=auth)
    assert response.status == 200, await response.text()
    text = ""
    try:
        async with asyncio.timeout(20):
            async for line in response.content:
                text += line.decode()
                if not line.strip() and len(events := parse_sse(text)) >= count:  # a frame ended
                    return events[:count]
    finally:
        response.close()
    raise AssertionError(f"the stream ended before {count} events: {text}")


def _payloads(events: list[SseEvent]) -> list[tuple[str, str, Any]]:
    return [(event.id, event.event, json.loads(event.data)) for event in events]


async def test_a_stream_cut_mid_run_resumes_through_a_second_gateway_with_no_gap_and_no_duplicate(
    gateway: Client, second_gateway: Client, auth: dict[str, str]
) -> None:
    # The demo model echoes the message a piece at a time (1 ms apart): a long message streams for a while.
    text = " ".join(f"word{index}" for index in range(50))  # under the demo's 400-character echo
    run_id, events_url = await _start(gateway, auth, {"content": text})
    before = await _read_some(gateway, events_url, auth, 3)
    assert all(event.event not in ("run_completed", "run_failed") for event in before)
    after = await read_sse(second_gateway, events_url, {**auth, "Last-Event-ID": before[-1].id})
    assert after[-1].event == "run_completed"
    whole = await read_sse(gateway, events_url, auth)  # uninterrupted, once the run is over
    assert _payloads(before + after) == _payloads(whole)
    assert [int(event.id) for event in whole] == list(range(1, len(whole) + 1))
    streamed = "".join(json.loads(e.data)["data"]["text"] for e in whole if e.event == "text_delta")
    assert text in streamed
    assert (await answer(await second_gateway.get(f"/api/v1/runs/{run_id}", headers=auth), 200))["id"] == run_id


async def test_content_that_looks_like_sse_framing_arrives_as_one_event_with_its_payload_intact(
    gateway: Client, auth: dict[str, str]
) -> None:
    run_id, events_url = await _start(gateway, auth, {"content": "What is lookup of gold?", "client_tools": [ASK]})
    paused = await read_sse_until(gateway, events_url, auth, "run_paused")
    (requested,) = [json.loads(e.data)["data"] for e in paused if e.event == "client_tool_requested"]
    results = {"results": [{"tool_call_id": requested["tool_call_id"], "content": INJECTION}]}
    await answer(await gateway.post(f"/api/v1/runs/{run_id}/tool_results", json=results, headers=auth), 200)
    response = await gateway.get(events_url, headers=auth)
    raw = await response.text()
    events = parse_sse(raw)
    assert events[-1].event == "run_completed"
    assert [int(event.id) for event in events] == list(range(1, len(events) + 1))  # no id: 999, no lost frame
    assert "x" not in {event.event for event in events}
    (finished,) = [json.loads(e.data)["data"] for e in events if e.event == "tool_call_finished"]
    assert finished["result"] == INJECTION
    # Every frame on the wire is one of the log's events (or a comment): none was split or made up by the content.
    frames = [f for f in raw.replace("\r\n", "\n").split("\n\n") if f.strip() and not f.startswith(":")]
    frames = [f for f in frames if not f.startswith("retry:") or "data:" in f]
    assert len(frames) == len(events), frames


async def read_sse_until(gateway: Client, path: str, auth: dict[str, str], kind: str) -> list[SseEvent]:
    """Follow a live stream until an event of `kind` (a paused run's stream stays open)."""
    response = await gateway.get(path, headers=auth)
    text = ""
    try:
        async with asyncio.timeout(20):
            async for line in response.content:
                text += line.decode()
                events = parse_sse(text) if not line.strip() else []  # a frame ended
                if events and events[-1].event == kind:
                    return events
    finally:
        response.close()
    raise AssertionError(f"no {kind} event: {text}")
