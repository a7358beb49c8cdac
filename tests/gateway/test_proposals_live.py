"""Proposals and decision schemas end to end through the gateway (ADR 0017): the real services, the example notes
MCP server, and the fake OpenAI-compatible upstream standing in for a model that calls `update_note`.

The note's body changes in two places far apart, so the companion `propose_update_note` shows a unified diff of two
hunks and a decision schema that lets the person approve a subset (`hunks`, a decision argument). A decision outside
that schema is 422 and runs nothing; an approval of hunk 1 runs `update_note` with `hunks: [1]`, so only the first
change lands; the audit trail over HTTP shows what was shown and what was decided, bound by the arguments' hashes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from examples.notes_mcp import store as notes
from examples.notes_mcp.store import NotesStore, read_applied_writes
from fakes.upstream import FakeToolCall, FakeUpstream, Reply
from gateway.app import create_app
from steward.errors import Reason
from tests.runtime.harness import tools_file
from tests.support.sse import read_sse
from tests.support.stack import running_stack, store_user_token

Json = dict[str, Any]
ROUTE = "fake-model"
BEFORE = "".join(f"line {n}\n" for n in range(1, 21))
AFTER = BEFORE.replace("line 2\n", "line two\n").replace("line 18\n", "line eighteen\n")


@dataclass
class Live:
    client: TestClient[web.Request, web.Application]
    fake: FakeUpstream
    notes: Path
    note_id: str
    auth: dict[str, str]
    other: dict[str, str]

    async def call(self, method: str, path: str, body: object = None, auth: dict[str, str] | None = None) -> Any:
        async with self.client.request(method, path, json=body, headers=auth or self.auth) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: object = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status in (200, 201, 202), (status, answer)
        return answer

    async def wait(self, run_id: str, states: set[str], within: float = 20.0) -> Json:
        deadline = time.monotonic() + within
        while (run := await self.ok("GET", f"/api/v1/runs/{run_id}"))["state"] not in states:
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return dict(run)


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    directory = tmp_path_factory.mktemp("proposals")
    notes_db = directory / "notes.db"
    seeded = NotesStore(notes_db)
    args = {"title": "Lines", "body": BEFORE}
    note_id = seeded.apply_write(None, "create_note", args, notes.create_note(args))[0].structured["note"]["id"]
    seeded.close()
    fake = FakeUpstream(default=Reply(text="Done."))
    await fake.start()
    routes = {
        "upstreams": {"fake-llm": {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True}},
        "routes": {ROUTE: {"description": "the fake upstream", "primary": "fake-llm/fake-model"}},
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    tools = tools_file(directory, notes_db)
    config = json.loads(tools.read_text())
    # The operator names a companion the server does not have: create_note's proposal fails (and falls back).
    config["servers"]["notes"]["proposals"] = {"create_note": {"companion": "no_such_tool"}}
    tools.write_text(json.dumps(config))
    runtime = {"tools_file": str(tools), "sweep_interval": 0.5}
    try:
        with pytest.MonkeyPatch.context() as env:  # read by the provider's settings at start-up only
            env.setenv("STEWARD_ROUTES_FILE", str(directory / "routes.json"))
            stack_context = running_stack(directory, runtime=runtime)
            stack = await stack_context.__aenter__()
        try:
            server = TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)
            async with TestClient(server) as client:
                other = {"Authorization": f"Bearer {await store_user_token(stack)}"}
                yield Live(client, fake, notes_db, note_id, {"Authorization": f"Bearer {stack.dev_token}"}, other)
        finally:
            await stack_context.__aexit__(None, None, None)
    finally:
        await fake.stop()


async def _paused(live: Live, call: FakeToolCall) -> tuple[str, Json]:
    """A run whose model makes `call`, paused on its confirmation."""
    agent = await live.ok(
        "POST",
        "/api/v1/agents",
        {
            "name": f"editor-{call.id}",
            "model_route": ROUTE,
            "tools": ["notes.*"],
            "approval_policy": {"mode": "interactive"},
        },
    )
    live.fake.enqueue(Reply(text="", tool_calls=[call]))
    conversation = await live.ok("POST", "/api/v1/conversations", {"title": "proposals"})
    body = {"conversation_id": conversation["id"], "agent_id": agent["id"], "content": "Go."}
    run_id = (await live.ok("POST", "/api/v1/runs", body))["run"]["id"]
    assert (await live.wait(run_id, {"paused", "completed", "failed"}))["state"] == "paused"
    (confirmation,) = (await live.ok("GET", f"/api/v1/confirmations?run_id={run_id}"))["confirmations"]
    return run_id, confirmation


async def test_a_proposal_that_cannot_be_made_falls_back_to_the_arguments(live: Live) -> None:
    arguments = {"title": "Groceries", "body": "milk"}
    run_id, confirmation = await _paused(live, FakeToolCall("call_new", "notes__create_note", json.dumps(arguments)))
    preview = confirmation["preview"]
    assert (preview["kind"], json.loads(preview["content"])) == ("json", arguments)
    assert preview["title"].startswith("notes.create_note wants to make a change (no proposal: the proposal tool")
    assert set(confirmation["decision_schema"]["properties"]) == {"outcome", "reason", "edited_arguments"}  # default
    assert confirmation["decision_arguments"] == []
    path = f"/api/v1/confirmations/{confirmation['id']}/decision"
    await live.ok("POST", path, {"decision": {"outcome": "reject", "reason": "not now"}})
    assert (await live.wait(run_id, {"completed", "failed"}))["state"] == "completed"


async def test_an_update_is_proposed_as_a_diff_decided_by_its_schema_and_audited(live: Live) -> None:
    update = {"id": live.note_id, "body": AFTER}
    run_id, confirmation = await _paused(live, FakeToolCall("call_up", "notes__update_note", json.dumps(update)))

    # What the person is shown: a unified diff of two hunks, and a schema to pick among them.
    preview = confirmation["preview"]
    assert preview["kind"] == "diff", preview
    assert preview["title"] == "Update the note 'Lines' (2 hunks in its body)"
    assert preview["content"].startswith("--- a/body\n+++ b/body\n@@ -1,5 +1,5 @@\n")
    assert "-line 2\n+line two\n" in preview["content"]
    assert "-line 18\n+line eighteen\n" in preview["content"]
    assert confirmation["decision_schema"]["properties"]["hunks"]["items"] == {"enum": [1, 2]}
    assert confirmation["decision_arguments"] == ["hunks"]

    # Outside the schema: 422 with a reason, and nothing runs.
    path = f"/api/v1/confirmations/{confirmation['id']}/decision"
    for outside in ({"outcome": "approve", "hunks": [3]}, {"outcome": "approve", "hunks": []}, {"hunks": [1]}):
        status, problem = await live.call("POST", path, {"decision": outside})
        assert (status, problem["reason"]) == (422, Reason.DECISION_INVALID), problem
    assert (await live.ok("GET", f"/api/v1/confirmations/{confirmation['id']}"))["state"] == "pending"
    assert [w.tool for w in read_applied_writes(live.notes)] == ["create_note"]

    decided = await live.ok("POST", path, {"decision": {"outcome": "approve", "hunks": [1]}})
    assert decided["decision"]["edited_arguments"] == {**update, "hunks": [1]}
    assert (await live.wait(run_id, {"completed", "failed"}))["state"] == "completed"
    note = NotesStore(live.notes)
    try:  # exactly as approved: only the first hunk landed
        assert (found := note.get_note(live.note_id)) is not None
        assert found["body"] == BEFORE.replace("line 2\n", "line two\n")
    finally:
        note.close()
    (write,) = [w for w in read_applied_writes(live.notes) if w.tool == "update_note"]
    assert write.arguments == {**update, "hunks": [1]}

    # The run's log carries the preview's kind and title with its content.
    events = await read_sse(live.client, f"/api/v1/runs/{run_id}/events", live.auth)
    (requested,) = [json.loads(e.data)["data"] for e in events if e.event == "confirmation_requested"]
    assert (requested["preview_kind"], requested["preview_title"]) == ("diff", preview["title"])
    assert requested["preview"] == preview["content"]

    # The audit trail over HTTP: what was shown and what was decided, bound by the hashes.
    audit = (await live.ok("GET", f"/api/v1/confirmations/{confirmation['id']}/audit"))["audit_events"]
    kinds = [event["kind"] for event in audit]
    assert kinds == ["created", *["decision_refused"] * 3, "decided", "execution_started", "execution_finished"]
    created, refused, decided_event, started = audit[0], audit[1], audit[4], audit[5]
    for shown in (created, decided_event):
        assert shown["preview"] == preview
        assert shown["decision_schema"] == confirmation["decision_schema"]
        assert shown["arguments_hash"] == confirmation["arguments_hash"]
    assert created["arguments"] == update
    assert (refused["reason"], refused["decision"]) == (Reason.DECISION_INVALID, {"outcome": "approve", "hunks": [3]})
    assert decided_event["decision"] == {"outcome": "approve", "hunks": [1]}
    assert decided_event["edited_arguments"] == {**update, "hunks": [1]}
    assert started["arguments_hash"] == decided_event["edited_arguments_hash"] != confirmation["arguments_hash"]

    # The run's trail is the same, keyset-paged; another user sees neither.
    first = await live.ok("GET", f"/api/v1/runs/{run_id}/audit?page_size=4")
    rest = await live.ok("GET", f"/api/v1/runs/{run_id}/audit?page_size=4&page_token={first['next_page_token']}")
    assert first["audit_events"] + rest["audit_events"] == audit
    assert rest["next_page_token"] is None
    for foreign in (f"/api/v1/confirmations/{confirmation['id']}/audit", f"/api/v1/runs/{run_id}/audit"):
        status, problem = await live.call("GET", foreign, auth=live.other)
        assert status == 404, problem
