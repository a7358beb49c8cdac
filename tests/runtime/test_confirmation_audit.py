"""Confirmations made by the runtime, seen by the person deciding them, end to end through the real services.

- The audit trail, per run and per user: each run's decided confirmation has its own entries (created, decided
  with who decided, where and why, and the approved write's execution), the run filter returns exactly them, the
  user's unfiltered trail both runs', and another user none of them.
- The preview of a write confirmation shows the proposed change: a title naming the tool, the arguments as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, notes_agent, world
from tests.support.grpc_helpers import principal_metadata

Entry = tuple[str, int, str, int, str]  # (confirmation id, kind, actor, surface, reason)


@pytest.fixture(scope="module")
async def notes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("confirmation-audit")) as running:
        yield running


async def new_user(running: World) -> World:
    """The world as a brand-new user, with an agent of their own (so their trail holds only this test's runs)."""
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    user = principal_metadata(running.stack.secret, user_id)
    agent = notes_agent()
    created = await running.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=user)
    return dataclasses.replace(running, user_id=user_id, user=user, agent_id=created.agent.id)


async def decided_run(
    running: World, text: str, decision: dict[str, object], surface: confirmation_pb2.Surface.ValueType
) -> tuple[run_pb2.Run, confirmation_pb2.Confirmation]:
    """A run that paused on a write, was decided from `surface`, and ended."""
    run = await running.start_run(text)
    await running.wait(run.id, paused=True)
    pending = await running.pending_confirmation(run.id)
    await running.confirm.DecideConfirmation(
        confirm_pb.DecideConfirmationRequest(
            confirmation_id=pending.id, decision_json=json.dumps(decision), surface=surface
        ),
        metadata=running.user,
    )
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    return ended, pending


async def trail(running: World, **filters: str) -> list[audit.AuditEvent]:
    reply = await running.confirm.ListAuditEvents(
        confirm_pb.ListAuditEventsRequest(page_size=500, **filters), metadata=running.user
    )
    assert reply.next_page_token == ""
    return list(reply.audit_events)


def entries(events: list[audit.AuditEvent]) -> list[Entry]:
    return [(event.confirmation_id, event.kind, event.actor, event.surface, event.reason) for event in events]


async def test_the_audit_trail_of_each_run_and_of_the_user(notes: World) -> None:
    me = await new_user(notes)
    approved_run, approved = await decided_run(
        me, "create_note Groceries", {"outcome": "approve", "reason": "looks right"}, confirmation_pb2.SURFACE_PWA
    )
    rejected_run, rejected = await decided_run(
        me, "create_note Not now", {"outcome": "reject", "reason": "later"}, confirmation_pb2.SURFACE_GRPC
    )
    runtime = "service:runtime"  # the runtime, acting for the user, makes the confirmation and runs the write

    first = await trail(me, run_id=approved_run.id)
    assert {event.run_id for event in first} == {approved_run.id}
    assert entries(first) == [
        (approved.id, audit.AUDIT_EVENT_KIND_CREATED, runtime, confirmation_pb2.SURFACE_GRPC, ""),
        (approved.id, audit.AUDIT_EVENT_KIND_DECIDED, me.user_id, confirmation_pb2.SURFACE_PWA, "looks right"),
        (approved.id, audit.AUDIT_EVENT_KIND_EXECUTION_STARTED, runtime, confirmation_pb2.SURFACE_GRPC, ""),
        (approved.id, audit.AUDIT_EVENT_KIND_EXECUTION_FINISHED, runtime, confirmation_pb2.SURFACE_GRPC, ""),
    ]
    second = await trail(me, run_id=rejected_run.id)
    assert {event.run_id for event in second} == {rejected_run.id}
    assert entries(second) == [
        (rejected.id, audit.AUDIT_EVENT_KIND_CREATED, runtime, confirmation_pb2.SURFACE_GRPC, ""),
        (rejected.id, audit.AUDIT_EVENT_KIND_DECIDED, me.user_id, confirmation_pb2.SURFACE_GRPC, "later"),
    ]
    for event in [*first, *second]:
        assert event.id, event
        assert event.create_time.seconds > 0, event
    # The confirmation filter agrees with the run filter.
    assert await trail(me, confirmation_id=approved.id) == first
    # The user's whole trail is both runs', oldest first, and nothing else (this user made no other run).
    assert await trail(me) == [*first, *second]

    other_id = f"user-{uuid.uuid4().hex[:8]}"
    someone_else = dataclasses.replace(me, user_id=other_id, user=principal_metadata(me.stack.secret, other_id))
    for filters in ({}, {"run_id": approved_run.id}, {"run_id": rejected_run.id}, {"confirmation_id": approved.id}):
        assert await trail(someone_else, **filters) == [], filters


async def test_the_preview_of_a_write_is_the_tools_proposal(notes: World) -> None:
    run = await notes.start_run("create_note Shopping list")
    await notes.wait(run.id, paused=True)
    confirmation = await notes.pending_confirmation(run.id)
    assert confirmation.tool_name == "notes.create_note"
    arguments = json.loads(confirmation.arguments_json)
    assert arguments == {"title": "Shopping list"}  # what the demo model proposed

    preview = confirmation.preview  # the notes server's companion proposes the new note as text
    assert preview.kind == confirmation_pb2.PREVIEW_KIND_TEXT
    assert preview.title == "Create the note 'Shopping list'"
    assert preview.content == "Shopping list\n\ntags: (none)\n\n"

    # The run's client-facing log shows the same proposal.
    stream = notes.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run.id), metadata=notes.user)
    requested: list[run_event_pb2.ConfirmationRequested] = []
    async for item in stream:
        if item.event.HasField("confirmation_requested"):
            requested.append(item.event.confirmation_requested)
        if item.event.HasField("run_paused"):
            break
    stream.cancel()
    [event] = requested
    assert (event.confirmation_id, event.tool_name) == (confirmation.id, "notes.create_note")
    assert json.loads(event.arguments_json) == arguments
    assert event.preview == preview.content
    assert (event.preview_kind, event.preview_title) == ("text", preview.title)

    await notes.runtime.CancelRun(runtime_pb.CancelRunRequest(id=run.id), metadata=notes.user)
    assert (await notes.wait(run.id)).state == run_pb2.RUN_STATE_CANCELLED
