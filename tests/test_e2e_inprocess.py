"""The walking skeleton end to end, all five services in-process, the gateway over real HTTP."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.sse import read_sse


async def test_chat_flow_streams_answer_and_persists_messages(
    gateway: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    created = await gateway.post("/api/v1/conversations", json={"title": "hello"}, headers=auth)
    assert created.status == 201
    conversation = await created.json()
    assert conversation["title"] == "hello"

    posted = await gateway.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "What is Steward?"}, headers=auth
    )
    assert posted.status == 202
    accepted = await posted.json()
    run_id = accepted["run"]["id"]
    assert accepted["events_url"] == f"/api/v1/runs/{run_id}/events"

    events = await read_sse(gateway, accepted["events_url"], auth)
    kinds = [event.event for event in events]
    assert kinds[0] == "run_started", events
    assert kinds[1] == "step_started"
    assert "text_delta" in kinds
    assert kinds[-2:] == ["usage", "run_completed"]
    assert [int(event.id) for event in events] == list(range(1, len(events) + 1))
    streamed = "".join(json.loads(e.data)["data"]["text"] for e in events if e.event == "text_delta")
    assert "What is Steward?" in streamed
    assert "offline demo model" in streamed

    listed = await gateway.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=auth)
    assert listed.status == 200
    messages = (await listed.json())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == [{"type": "text", "text": "What is Steward?"}]
    assert messages[1]["content"] == [{"type": "text", "text": streamed}]
    assert messages[1]["run_id"] == run_id

    run = await (await gateway.get(f"/api/v1/runs/{run_id}", headers=auth)).json()
    assert run["state"] == "completed"
    assert run["step_count"] == 1
    assert run["usage"]["output_tokens"] > 0
    assert run["last_event_seq"] == len(events)
