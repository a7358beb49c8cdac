"""Bad decisions on REAL paused runs, through the gateway: a stable 4xx reason, no state change, no execution.

Every run is started over HTTP (an interactive agent with the notes tools, a conversation, a run "create_note
Groceries"); the offline demo model calls the example notes MCP server's `create_note`, a write, so the run
pauses for a confirmation. A snapshot holds the confirmation's JSON, the run's JSON (state, last event seq,
update time) and the notes server's own record of applied writes (keyed by the confirmation id); after a
refused decision it is exactly as before. A valid decision afterwards still works, and executes once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from examples.notes_mcp.store import AppliedWrite, read_applied_writes
from gateway.app import create_app
from tests.runtime.harness import tools_file
from tests.support.sse import read_sse
from tests.support.stack import running_stack, store_user_token

Json = dict[str, Any]
ENDED = {"completed", "failed", "cancelled", "incomplete", "expired"}
AGENT: Json = dict(name="notes-keeper", model_route="demo", tools=["notes.*"], approval_policy={"mode": "interactive"})


@dataclass
class Live:
    """A stack and a gateway on a real port; `auth` is the dev user's (who owns the agent), `other` a second user's."""

    client: TestClient[web.Request, web.Application]
    notes: Path
    auth: dict[str, str]
    other: dict[str, str] = field(default_factory=dict)
    agent_id: str = ""

    async def call(self, method: str, path: str, body: object = None, auth: dict[str, str] | None = None) -> Any:
        async with self.client.request(method, path, json=body, headers=auth or self.auth) as response:
            return response.status, response.content_type, await response.json()

    async def ok(self, method: str, path: str, body: object = None) -> Any:
        status, _, answer = await self.call(method, path, body)
        assert status in (200, 201, 202), (status, answer)
        return answer

    async def paused_run(self) -> tuple[Json, Json]:
        """A new run that asked to create a note and is paused for it, and its pending confirmation."""
        conversation = await self.ok("POST", "/api/v1/conversations", {"title": "bad decisions"})
        body = {"conversation_id": conversation["id"], "agent_id": self.agent_id, "content": "create_note Groceries"}
        run_id = (await self.ok("POST", "/api/v1/runs", body))["run"]["id"]
        run = await self.wait(run_id, {"paused"} | ENDED)
        assert (run["state"], run["pause_reason"]) == ("paused", "awaiting_confirmation"), run
        (confirmation,) = (await self.ok("GET", f"/api/v1/confirmations?run_id={run_id}"))["confirmations"]
        assert (confirmation["state"], confirmation["tool_name"]) == ("pending", "notes.create_note"), confirmation
        return run, confirmation

    async def wait(self, run_id: str, states: set[str], within: float = 20.0) -> Json:
        deadline = time.monotonic() + within
        while (run := await self.ok("GET", f"/api/v1/runs/{run_id}"))["state"] not in states:
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return dict(run)

    async def refused(self, confirmation: Json, body: object, auth: dict[str, str] | None = None) -> tuple[int, str]:
        """The status and problem reason of a decision that must be refused."""
        status, content_type, problem = await self.call("POST", _decision(confirmation), body, auth)
        assert content_type == "application/problem+json", (status, problem)
        return status, problem["reason"]

    async def snapshot(self, run: Json, confirmation: Json) -> tuple[Json, Json, list[AppliedWrite]]:
        """What a refused decision must leave alone: the confirmation, the run, the applied writes."""
        shown = await self.ok("GET", f"/api/v1/confirmations/{confirmation['id']}")
        return shown, await self.ok("GET", f"/api/v1/runs/{run['id']}"), self.writes()

    def writes(self, confirmation: Json | None = None) -> list[AppliedWrite]:
        every = read_applied_writes(self.notes) if self.notes.exists() else []
        return [w for w in every if confirmation is None or w.idempotency_key == confirmation["id"]]

    async def events(self, run_id: str) -> list[tuple[str, Json]]:
        """An ended run's whole event log, as (type, data)."""
        events = await read_sse(self.client, f"/api/v1/runs/{run_id}/events", self.auth)
        return [(event.event, json.loads(event.data)["data"]) for event in events]


def _decision(confirmation: Json) -> str:
    return f"/api/v1/confirmations/{confirmation['id']}/decision"


@asynccontextmanager
async def _live(directory: Path, **runtime: object) -> AsyncIterator[Live]:
    notes = directory / "notes.db"
    settings = {"tools_file": str(tools_file(directory, notes)), "sweep_interval": 0.5, **runtime}
    async with running_stack(directory, runtime=settings) as stack:
        server = TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)
        async with TestClient(server) as client:
            live = Live(client, notes, {"Authorization": f"Bearer {stack.dev_token}"})
            live.other = {"Authorization": f"Bearer {await store_user_token(stack)}"}
            live.agent_id = (await live.ok("POST", "/api/v1/agents", AGENT))["id"]
            yield live


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    async with _live(tmp_path_factory.mktemp("bad-decisions")) as running:
        yield running


@pytest.fixture(scope="module")
async def shared(live: Live) -> tuple[Json, Json]:
    """One paused run that every bad decision is tried on, and approved at the end of the module."""
    return await live.paused_run()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"decision": {"outcome": "maybe"}}, "DECISION_INVALID"),
        ({"decision": {"outcome": "APPROVE"}}, "DECISION_INVALID"),
        ({"decision": {"reason": "no outcome"}}, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "extra": 1}}, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "reason": 5}}, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "edited_arguments": "not an object"}}, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "edited_arguments": ["title", "x"]}}, "DECISION_INVALID"),
        ({"decision": "approve"}, "INVALID_ARGUMENT"),  # refused by the gateway before the confirm service
        ({"outcome": "approve"}, "INVALID_ARGUMENT"),
    ],
)
async def test_a_decision_of_the_wrong_schema_changes_nothing(
    live: Live, shared: tuple[Json, Json], body: object, reason: str
) -> None:
    before = await live.snapshot(*shared)
    assert await live.refused(shared[1], body) == (422 if reason == "DECISION_INVALID" else 400, reason)
    assert await live.snapshot(*shared) == before
    assert before[1]["state"] == "paused"


async def test_a_mismatched_arguments_hash_changes_nothing(live: Live, shared: tuple[Json, Json]) -> None:
    before = await live.snapshot(*shared)
    for outcome in ("approve", "reject"):
        body = {"decision": {"outcome": outcome}, "expected_arguments_hash": "0" * 64}
        assert await live.refused(shared[1], body) == (400, "ARGUMENTS_MISMATCH")
    assert await live.snapshot(*shared) == before


async def test_another_user_cannot_see_or_decide_the_confirmation(live: Live, shared: tuple[Json, Json]) -> None:
    before = await live.snapshot(*shared)
    right_hash = shared[1]["arguments_hash"]
    for body in (
        {"decision": {"outcome": "approve"}, "expected_arguments_hash": right_hash},
        {"decision": {"outcome": "reject"}},
    ):
        assert await live.refused(shared[1], body, live.other) == (404, "CONFIRMATION_NOT_FOUND")
    status, _, problem = await live.call("GET", f"/api/v1/confirmations/{shared[1]['id']}", auth=live.other)
    assert (status, problem["reason"]) == (404, "CONFIRMATION_NOT_FOUND")
    _, _, listed = await live.call("GET", "/api/v1/confirmations?state=all", auth=live.other)
    assert listed["confirmations"] == []
    assert await live.snapshot(*shared) == before


async def test_a_second_decision_is_refused_and_the_rejected_write_never_runs(live: Live) -> None:
    run, confirmation = await live.paused_run()
    writes = live.writes()
    status, _, rejected = await live.call(
        "POST", _decision(confirmation), {"decision": {"outcome": "reject", "reason": "no"}}
    )
    assert (status, rejected["state"], rejected["decision"]["outcome"]) == (200, "rejected", "reject")
    approve = {"decision": {"outcome": "approve"}, "expected_arguments_hash": confirmation["arguments_hash"]}
    assert await live.refused(confirmation, approve) == (409, "CONFIRMATION_ALREADY_DECIDED")  # while the run resumes
    ended = await live.wait(run["id"], ENDED)
    assert ended["state"] == "completed", ended
    before = await live.snapshot(run, confirmation)
    assert before[0]["decision"] == rejected["decision"]
    assert await live.refused(confirmation, approve) == (409, "CONFIRMATION_ALREADY_DECIDED")  # once it ended
    assert await live.snapshot(run, confirmation) == before
    assert live.writes() == writes  # nothing new, so nothing for this confirmation
    events = await live.events(run["id"])
    assert [data["outcome"] for kind, data in events if kind == "confirmation_decided"] == ["rejected"]
    failed = [data for kind, data in events if kind == "tool_call_failed"]
    assert [(f["tool_call_id"], f["reason"]) for f in failed] == [(confirmation["tool_call_id"], "REJECTED")]
    assert "They said: no" in failed[0]["message"]  # the model is told, and the run goes on to complete


async def test_edited_arguments_outside_the_tool_schema_are_refused(live: Live) -> None:
    run, confirmation = await live.paused_run()
    before = await live.snapshot(run, confirmation)
    for edited in ({"title": 5}, {}, {"title": "ok", "body": ["not", "a", "string"]}):  # title: a required string
        body = {"decision": {"outcome": "approve", "edited_arguments": edited}}
        status, _, answer = await live.call("POST", _decision(confirmation), body)
        assert (status, answer.get("reason")) == (422, "DECISION_INVALID"), answer
        assert "input schema" in answer["detail"]
        assert await live.snapshot(run, confirmation) == before
    # The person fixes the edit: it is accepted, and the edited arguments are what is applied, once.
    fixed = {"decision": {"outcome": "approve", "edited_arguments": {"title": "Groceries (edited)"}}}
    status, _, answer = await live.call("POST", _decision(confirmation), fixed)
    assert (status, answer["state"]) == (200, "approved"), answer
    assert (await live.wait(run["id"], ENDED))["state"] == "completed"
    (write,) = live.writes(confirmation)
    assert "Groceries (edited)" in repr(write)


async def test_an_expired_confirmation_cannot_be_decided(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with _live(tmp_path_factory.mktemp("bad-decisions-expiry"), confirmation_ttl=3.0) as expiring:
        run, confirmation = await expiring.paused_run()
        expire = datetime.fromisoformat(confirmation["expire_time"].replace("Z", "+00:00")).timestamp()
        await asyncio.sleep(max(0.0, expire - time.time()) + 0.2)
        approve = {"decision": {"outcome": "approve"}, "expected_arguments_hash": confirmation["arguments_hash"]}
        assert await expiring.refused(confirmation, approve) == (409, "CONFIRMATION_EXPIRED")
        ended = await expiring.wait(run["id"], ENDED)
        assert ended["state"] == "completed", ended
        before = await expiring.snapshot(run, confirmation)
        shown = before[0]
        assert (shown["state"], shown["decision"]["outcome"]) == ("expired", "reject")
        assert shown["decision"]["surface"] == "system"  # the auto-reject, not the refused approvals
        assert await expiring.refused(confirmation, approve) == (409, "CONFIRMATION_EXPIRED")
        assert await expiring.snapshot(run, confirmation) == before
        assert expiring.writes() == []
        events = await expiring.events(run["id"])
        assert [data["outcome"] for kind, data in events if kind == "confirmation_decided"] == ["expired"]
        failed = [data for kind, data in events if kind == "tool_call_failed"]
        assert [f["reason"] for f in failed] == ["REJECTED"]
        assert "Nobody confirmed" in failed[0]["message"]


# Last in the module on purpose (pytest keeps file order; no plugin here reorders tests): it decides the shared
# confirmation the tests above refused decisions on.
async def test_after_every_bad_decision_one_approval_executes_the_write_once(
    live: Live, shared: tuple[Json, Json]
) -> None:
    run, confirmation = shared
    assert live.writes(confirmation) == []
    writes = len(live.writes())
    body = {"decision": {"outcome": "approve"}, "expected_arguments_hash": confirmation["arguments_hash"]}
    status, _, approved = await live.call("POST", _decision(confirmation), body)
    assert (status, approved["state"]) == (200, "approved")
    assert (await live.wait(run["id"], ENDED))["state"] == "completed"
    status, _, again = await live.call("POST", _decision(confirmation), body)  # the same decision: idempotent
    assert (status, again["decision"]) == (200, approved["decision"])
    (write,) = live.writes(confirmation)
    assert len(live.writes()) == writes + 1
    assert (write.tool, write.arguments) == ("create_note", confirmation["arguments"])
    events = await live.events(run["id"])
    assert [data["outcome"] for kind, data in events if kind == "confirmation_decided"] == ["approved"]
    assert [kind for kind, _ in events].count("tool_call_finished") == 1
    assert "tool_call_failed" not in [kind for kind, _ in events]
