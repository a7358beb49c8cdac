"""Resuming a run's event stream after any seq yields exactly the rest of the log."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.sse import parse_sse, read_sse


async def _completed_run(gateway: TestClient[Any, Any], auth: dict[str, str]) -> str:
    conversation = await (await gateway.post("/api/v1/conversations", json={}, headers=auth)).json()
    posted = await gateway.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "resume me please"}, headers=auth
    )
    run_id: str = (await posted.json())["run"]["id"]
    await read_sse(gateway, f"/api/v1/runs/{run_id}/events", auth)  # wait for the end
    return run_id


async def test_last_event_id_resumes_exactly_after_it(gateway: TestClient[Any, Any], auth: dict[str, str]) -> None:
    run_id = await _completed_run(gateway, auth)
    path = f"/api/v1/runs/{run_id}/events"
    full = await read_sse(gateway, path, auth)
    assert len(full) >= 5
    for cut in range(len(full) + 1):
        by_header = await read_sse(gateway, path, {**auth, "Last-Event-ID": str(cut)})
        assert full[:cut] + by_header == full, cut
    by_query = await read_sse(gateway, f"{path}?last_event_id=3", auth)
    assert full[:3] + by_query == full


async def test_stream_ids_are_the_store_seq_and_carry_a_retry_hint(
    gateway: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    run_id = await _completed_run(gateway, auth)
    response = await gateway.get(f"/api/v1/runs/{run_id}/events", headers=auth)
    raw = await response.text()
    assert "retry: 2000" in raw
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    run = await (await gateway.get(f"/api/v1/runs/{run_id}", headers=auth)).json()
    assert [int(e.id) for e in parse_sse(raw)] == list(range(1, run["last_event_seq"] + 1))
