"""The gateway's drain (gateway.draining, ADR 0015), in process: /readyz answers 503 at once, requests are still
answered through the pause, and then an open event stream ends cleanly (no `error` event); the client resumes
with Last-Event-ID through another gateway and loses nothing. The process-level drain is tests/test_drain.py."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.draining import drain
from tests.support.gateway_http import answer
from tests.support.sse import parse_sse
from tests.support.stack import Stack

Client = TestClient[web.Request, web.Application]
ASK = {
    "name": "lookup",
    "description": "Looks a thing up.",
    "input_schema": {"type": "object", "properties": {"thing": {"type": "string"}}, "required": ["thing"]},
}
PAUSE = 0.5


async def test_a_draining_gateway_is_unready_at_once_serves_through_the_pause_then_ends_streams_cleanly(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    app = create_app(stack.gateway_settings())
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as draining:
        assert (await draining.get("/readyz")).status == 200
        # A run paused for a client tool: its event stream stays open, waiting.
        conversation = await answer(await draining.post("/api/v1/conversations", json={}, headers=auth), 201)
        body: dict[str, Any] = {"conversation_id": conversation["id"], "content": "What is lookup of gold?"}
        created = await answer(
            await draining.post("/api/v1/runs", json={**body, "client_tools": [ASK]}, headers=auth), 202
        )
        stream = await draining.get(created["events_url"], headers=auth)
        assert stream.status == 200
        text = ""
        async with asyncio.timeout(20):
            while "event: run_paused" not in text:
                text += (await stream.content.readline()).decode()
        began = time.monotonic()
        stopping = asyncio.create_task(drain(app, PAUSE))
        await asyncio.sleep(0)
        ready = await draining.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["services"] == {"gateway": "draining"}
        listed = await draining.get("/api/v1/conversations", headers=auth)  # still answered in the pause
        assert listed.status == 200
        assert time.monotonic() - began < PAUSE
        async with asyncio.timeout(5):
            text += (await stream.content.read()).decode()  # to the end of the stream
        ended = time.monotonic() - began
        assert PAUSE <= ended < PAUSE + 1.0, ended
        await stopping
    events = parse_sse(text)
    assert events[-1].event == "run_paused"
    assert "error" not in {event.event for event in events}
    # The client reconnects (here: to another gateway) after the last event it saw: nothing is lost.
    (requested,) = [json.loads(e.data)["data"] for e in events if e.event == "client_tool_requested"]
    results = {"results": [{"tool_call_id": requested["tool_call_id"], "content": "gold is heavy"}]}
    run_id = created["run"]["id"]
    await answer(await gateway.post(f"/api/v1/runs/{run_id}/tool_results", json=results, headers=auth), 200)
    resumed = await gateway.get(created["events_url"], headers={**auth, "Last-Event-ID": events[-1].id})
    rest = parse_sse(await resumed.text())
    assert rest[-1].event == "run_completed"
    ids = [int(event.id) for event in events + rest]
    assert ids == list(range(1, len(ids) + 1))
