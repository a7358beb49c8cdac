"""Runs over HTTP: create (idempotent), client tools and their results, state conflicts (409) and expired
event cursors (410), through the real in-process stack with the offline demo model.

Runs that pause are followed over SSE until the pause event, with a bound; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.retention import RetentionRepository
from steward.timeutil import now
from tests.support.gateway_http import answer, raw_request, refusal
from tests.support.sse import SseEvent, parse_sse, read_sse
from tests.support.stack import Stack, runtime_confirmation

Client = TestClient[Any, Any]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def _conversation(gateway: Client, auth: dict[str, str]) -> str:
    conversation_id: str = (await answer(await gateway.post("/api/v1/conversations", json={}, headers=auth), 201))["id"]
    return conversation_id


async def _events_until(gateway: Client, path: str, headers: dict[str, str], kind: str) -> list[SseEvent]:
    """Follow an SSE stream until an event of `kind` arrives (a paused run's stream stays open)."""
    async with asyncio.timeout(20):
        response = await gateway.get(path, headers=headers)
        assert response.status == 200, await response.text()
        text = ""
        try:
            async for line in response.content:
                text += line.decode()
                events = parse_sse(text)
                if events and events[-1].event == kind:
                    return events
        finally:
            response.close()
    raise AssertionError(f"the stream ended before a {kind} event: {text}")


async def test_a_run_is_created_once_per_run_id_and_idempotency_key(gateway: Client, auth: dict[str, str]) -> None:
    conversation_id = await _conversation(gateway, auth)
    run_id = str(uuid.uuid4())
    body = {"conversation_id": conversation_id, "content": "Hello once", "run_id": run_id}
    headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    first = await answer(await gateway.post("/api/v1/runs", json=body, headers=headers), 202)
    assert (first["run"]["id"], first["existed"]) == (run_id, False)
    assert first["events_url"] == f"/api/v1/runs/{run_id}/events"
    again = await answer(await gateway.post("/api/v1/runs", json=body, headers=headers), 200)
    assert (again["run"]["id"], again["existed"]) == (run_id, True)

    events = await read_sse(gateway, first["events_url"], auth)
    assert events[-1].event == "run_completed"
    messages = await answer(await gateway.get(f"/api/v1/conversations/{conversation_id}/messages", headers=auth), 200)
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant"]  # one input, appended once
    runs = await answer(await gateway.get(f"/api/v1/runs?conversation_id={conversation_id}", headers=auth), 200)
    assert [r["id"] for r in runs["runs"]] == [run_id]


async def test_a_run_takes_an_agent_a_mode_and_limits(gateway: Client, auth: dict[str, str]) -> None:
    agent = {"name": f"runner-{uuid.uuid4().hex[:8]}", "model_route": "demo"}
    agent_id = (await answer(await gateway.post("/api/v1/agents", json=agent, headers=auth), 201))["id"]
    body = {
        "conversation_id": await _conversation(gateway, auth),
        "content": [{"type": "text", "text": "Hi"}],
        "agent_id": agent_id,
        "mode": "autonomous",
        "limits": {"max_steps": 3, "timeout_seconds": 30},
    }
    created = await answer(await gateway.post("/api/v1/runs", json=body, headers=auth), 202)
    run = created["run"]
    assert (run["agent_id"], run["mode"]) == (agent_id, "autonomous")
    assert (run["limits"]["max_steps"], run["limits"]["timeout_seconds"]) == (3, 30)
    assert (await read_sse(gateway, created["events_url"], auth))[-1].event == "run_completed"


BAD_RUNS = [
    ({"conversation_id": None}, "INVALID_ARGUMENT", 400),
    ({"mode": "reckless"}, "INVALID_ARGUMENT", 400),
    ({"limits": {"max_steps": -1}}, "INVALID_ARGUMENT", 400),
    ({"client_tools": [{"name": "bad name!"}]}, "INVALID_ARGUMENT", 400),
    ({"client_tools": [{"name": "t", "input_schema": "{}"}]}, "INVALID_ARGUMENT", 400),
    ({"client_tools": [{"name": "t", "input_schema": {"type": "no-such-type"}}]}, "INVALID_ARGUMENT", 400),
    ({"run_id": "not-a-uuid"}, "INVALID_ARGUMENT", 400),
    ({"input": "a misspelt field"}, "INVALID_ARGUMENT", 400),
    ({"conversation_id": str(uuid.uuid4())}, "CONVERSATION_NOT_FOUND", 404),
    ({"agent_id": str(uuid.uuid4())}, "AGENT_NOT_FOUND", 404),
]


@pytest.mark.parametrize(("change", "reason", "status"), BAD_RUNS)
async def test_bad_runs_are_refused(
    gateway: Client, auth: dict[str, str], change: dict[str, Any], reason: str, status: int
) -> None:
    conversation_id = await _conversation(gateway, auth)
    body = {
        key: value for key, value in {"conversation_id": conversation_id, "content": "x", **change}.items() if value
    }
    assert await refusal(await gateway.post("/api/v1/runs", json=body, headers=auth), status) == reason
    listed = await answer(await gateway.get(f"/api/v1/runs?conversation_id={conversation_id}", headers=auth), 200)
    assert listed["runs"] == []


async def test_a_client_tool_round_trip_over_http(gateway: Client, auth: dict[str, str]) -> None:
    body = {
        "conversation_id": await _conversation(gateway, auth),
        "content": "What is get_weather in Zürich?",
        "client_tools": [WEATHER],
    }
    created = await answer(await gateway.post("/api/v1/runs", json=body, headers=auth), 202)
    run_id, events_url = created["run"]["id"], created["events_url"]
    assert [tool["name"] for tool in created["run"]["client_tools"]] == ["client.get_weather"]
    events = await _events_until(gateway, events_url, auth, "run_paused")
    (requested,) = [json.loads(e.data)["data"] for e in events if e.event == "client_tool_requested"]
    assert requested["tool_name"] == "client.get_weather"
    paused = await answer(await gateway.get(f"/api/v1/runs/{run_id}", headers=auth), 200)
    assert (paused["state"], paused["pause_reason"]) == ("paused", "awaiting_client_tool")
    assert paused["running_seconds"] > 0  # the first claim's running time, checkpointed with the pause

    path = f"/api/v1/runs/{run_id}/tool_results"
    stranger = {"results": [{"tool_call_id": "call_nope", "content": "x"}]}
    assert await refusal(await gateway.post(path, json=stranger, headers=auth), 409) == "RUN_STATE_CONFLICT"
    result = {"results": [{"tool_call_id": requested["tool_call_id"], "content": "Sunny, 21 °C", "is_error": False}]}
    await answer(await gateway.post(path, json=result, headers=auth), 200)
    rest = await read_sse(gateway, events_url, {**auth, "Last-Event-ID": events[-1].id})
    assert rest[-1].event == "run_completed"
    ended = await answer(await gateway.get(f"/api/v1/runs/{run_id}", headers=auth), 200)
    assert ended["state"] == "completed"
    assert ended["running_seconds"] > paused["running_seconds"]  # both claims counted
    messages = await answer(
        await gateway.get(f"/api/v1/conversations/{body['conversation_id']}/messages", headers=auth), 200
    )
    assert "Sunny, 21 °C" in messages["messages"][-1]["content"][0]["text"]
    assert (await answer(await gateway.post(path, json=result, headers=auth), 200))["state"] == "completed"  # a repeat


async def test_bad_tool_results_are_refused(gateway: Client, auth: dict[str, str]) -> None:
    path = f"/api/v1/runs/{uuid.uuid4()}/tool_results"
    bodies: list[dict[str, Any]] = [
        {},
        {"results": []},
        {"results": [{"content": "x"}]},
        {"results": [{"tool_call_id": "c", "content": {"json": "object"}}]},
        {"results": [{"tool_call_id": "c", "content": "x", "is_error": "no"}]},
        {"results": [{"tool_call_id": "c", "content": "x"}], "run_id": "extra"},
    ]
    for body in bodies:
        assert await refusal(await gateway.post(path, json=body, headers=auth), 400) == "INVALID_ARGUMENT", body
    unknown = {"results": [{"tool_call_id": "c", "content": "x"}]}
    assert await refusal(await gateway.post(path, json=unknown, headers=auth), 404) == "RUN_NOT_FOUND"


async def test_a_second_different_decision_is_a_conflict(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    confirmation = await runtime_confirmation(stack)
    path = f"/api/v1/confirmations/{confirmation.id}/decision"
    await answer(await gateway.post(path, json={"decision": {"outcome": "reject"}}, headers=auth), 200)
    second = await gateway.post(path, json={"decision": {"outcome": "approve"}}, headers=auth)
    assert await refusal(second, 409) == "CONFIRMATION_ALREADY_DECIDED"


async def test_an_expired_cursor_is_410_before_the_stream_starts(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    body = {"conversation_id": await _conversation(gateway, auth), "content": "compact me later"}
    created = await answer(await gateway.post("/api/v1/runs", json=body, headers=auth), 202)
    events_url = created["events_url"]
    full = await read_sse(gateway, events_url, auth)
    assert full[-1].event == "run_completed"
    # Retention as the store runs it, over the stack's database: the run ended "long ago" from a second ahead.
    # Every other run that ended before then is compacted too; no other test reads an old run's log.
    engine = create_engine(f"sqlite+aiosqlite:///{(stack.data_dir / 'steward.db').resolve()}")
    try:
        assert await RetentionRepository(create_sessionmaker(engine)).compact(now() + timedelta(seconds=1)) >= 1
    finally:
        await engine.dispose()
    run = await answer(await gateway.get(f"/api/v1/runs/{created['run']['id']}", headers=auth), 200)
    kept = [event for event in full if event.event not in ("text_delta", "reasoning_delta")]
    through = max(int(event.id) for event in full if event.event == "text_delta")

    for headers in (auth, {**auth, "Last-Event-ID": "1"}, {**auth, "Last-Event-ID": str(through - 1)}):
        response = await gateway.get(events_url, headers=headers)
        assert await refusal(response, 410) == "CURSOR_EXPIRED"
        assert "X-Request-ID" in response.headers
    assert await refusal(await gateway.get(f"{events_url}?last_event_id=0", headers=auth), 410) == "CURSOR_EXPIRED"
    rest = await read_sse(gateway, events_url, {**auth, "Last-Event-ID": str(through)})
    assert rest == [event for event in kept if int(event.id) > through]
    assert await read_sse(gateway, events_url, {**auth, "Last-Event-ID": str(run["last_event_seq"])}) == []


async def test_an_idempotency_key_that_is_not_printable_ascii_is_a_400(gateway: Client, auth: dict[str, str]) -> None:
    body = b'{"title": "x"}'
    head = (
        b"POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {auth['Authorization']}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Idempotency-Key: \xff\xfe\r\n\r\n"
    )
    answer = await raw_request(gateway, head + body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b'"reason": "INVALID_ARGUMENT"' in answer
