"""Runs end to end through the real store, provider (demo model), confirm service, runtime and the example
notes MCP server: read tools, confirmed writes (approve, reject, edit, expire), cancel, and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from steward.common.v1 import content_pb2, limits_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from tests.runtime.harness import World, world


@pytest.fixture(scope="module")
async def notes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("runs")) as running:
        yield running


def tool_results(messages: list[content_pb2.ChatMessage]) -> list[tuple[str, bool]]:
    found = []
    for message in messages:
        for block in message.content:
            if block.HasField("tool_result"):
                found.append((block.tool_result.content, block.tool_result.is_error))
    return found


async def test_a_read_tool_runs_at_once_and_the_model_answers(notes: World) -> None:
    run = await notes.start_run("Please list_notes for me.")
    ended = await notes.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert ended.step_count == 2  # the tool call, then the answer
    kinds = await notes.events(run.id)
    assert kinds[0] == "run_started"
    assert kinds.index("tool_call_started") < kinds.index("tool_call_finished") < kinds.index("run_completed")
    assert "confirmation_requested" not in kinds
    ((content, is_error),) = tool_results(await notes.messages(ended))
    assert not is_error
    assert "notes" in content


async def test_an_approved_write_happens_once_and_the_run_completes(notes: World) -> None:
    before = len(notes.applied_writes())
    run = await notes.start_run("create_note Groceries")
    paused = await notes.wait(run.id, paused=True)
    assert (paused.state, paused.pause_reason) == (run_pb2.RUN_STATE_PAUSED, run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION)
    confirmation = await notes.pending_confirmation(run.id)
    assert confirmation.tool_name == "notes.create_note"
    assert len(notes.applied_writes()) == before  # nothing written before the approval
    await notes.decide(confirmation.id, {"outcome": "approve"})
    ended = await notes.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    writes = notes.applied_writes()[before:]
    assert [w.idempotency_key for w in writes] == [confirmation.id]  # exactly once, keyed by the confirmation
    assert writes[0].arguments["title"] == "Groceries"  # the text after the tool's name
    kinds = await notes.events(run.id)
    for kind in ("confirmation_requested", "run_paused", "run_resumed", "confirmation_decided", "tool_call_finished"):
        assert kind in kinds, kinds
    assert kinds[-1] == "run_completed"


async def test_a_rejected_write_is_not_made_and_the_model_is_told(notes: World) -> None:
    before = len(notes.applied_writes())
    run = await notes.start_run("create_note Not this one")
    await notes.wait(run.id, paused=True)
    confirmation = await notes.pending_confirmation(run.id)
    await notes.decide(confirmation.id, {"outcome": "reject", "reason": "wrong list"})
    ended = await notes.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED
    assert len(notes.applied_writes()) == before
    ((content, is_error),) = tool_results(await notes.messages(ended))
    assert is_error
    assert "rejected" in content
    assert "wrong list" in content


async def test_edited_arguments_are_the_ones_written(notes: World) -> None:
    before = len(notes.applied_writes())
    run = await notes.start_run("create_note Draft")
    await notes.wait(run.id, paused=True)
    confirmation = await notes.pending_confirmation(run.id)
    await notes.decide(confirmation.id, {"outcome": "approve", "edited_arguments": {"title": "Edited title"}})
    ended = await notes.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED
    (write,) = notes.applied_writes()[before:]
    assert write.arguments == {"title": "Edited title"}


async def test_a_write_with_arguments_outside_its_schema_is_refused_before_any_confirmation(notes: World) -> None:
    before = len(notes.applied_writes())
    run = await notes.start_run("update_note please")  # the demo model sends "update_note please" as the note id
    ended = await notes.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    kinds = await notes.events(run.id)
    assert "confirmation_requested" not in kinds
    assert "run_paused" not in kinds
    ((content, is_error),) = tool_results(await notes.messages(ended))
    assert is_error
    assert content.startswith("invalid arguments for notes.update_note: at /")
    assert "at /id: " in content
    assert content.count("invalid arguments for") == 1
    assert len(notes.applied_writes()) == before


async def test_cancelling_a_paused_run_cancels_its_confirmation(notes: World) -> None:
    run = await notes.start_run("create_note Never mind")
    await notes.wait(run.id, paused=True)
    confirmation = await notes.pending_confirmation(run.id)
    reply = await notes.runtime.CancelRun(runtime_pb.CancelRunRequest(id=run.id), metadata=notes.user)
    assert reply.run.state == run_pb2.RUN_STATE_CANCELLED
    got = await notes.confirm.GetConfirmation(
        confirm_pb.GetConfirmationRequest(id=confirmation.id), metadata=notes.user
    )
    assert got.confirmation.state == confirmation_pb2.CONFIRMATION_STATE_CANCELLED
    assert (await notes.events(run.id))[-1] == "run_cancelled"


async def test_max_steps_ends_the_run_incomplete(notes: World) -> None:
    run = await notes.start_run("Please list_notes", limits=limits_pb2.RunLimits(max_steps=1))
    ended = await notes.wait(run.id)
    assert (ended.state, ended.incomplete_reason) == (
        run_pb2.RUN_STATE_INCOMPLETE,
        run_pb2.INCOMPLETE_REASON_MAX_STEPS,
    )
    assert (await notes.events(run.id))[-1] == "run_incomplete"


async def test_the_wall_clock_limit_ends_the_run_incomplete(notes: World) -> None:
    # 1 ms of running time: over before the first step's answer is in.
    run = await notes.start_run("Please list_notes", limits=limits_pb2.RunLimits(timeout=Duration(nanos=1_000_000)))
    ended = await notes.wait(run.id)
    assert (ended.state, ended.incomplete_reason) == (run_pb2.RUN_STATE_INCOMPLETE, run_pb2.INCOMPLETE_REASON_TIMEOUT)


async def test_an_unanswered_confirmation_expires_and_the_model_is_told(tmp_path: Path) -> None:
    # The confirmation's own expiry comes before the run's pause deadline (ADR 0018): it is rejected, the model
    # is told, and the run goes on; the pause deadline never applies.
    async with world(tmp_path, confirmation_ttl=1.0) as running:
        run = await running.start_run(
            "create_note Too late", limits=limits_pb2.RunLimits(pause_timeout=Duration(seconds=30))
        )
        paused = await running.wait(run.id, paused=True)
        confirmation = await running.pending_confirmation(run.id)
        assert confirmation.expire_time.ToDatetime() < paused.pause_expire_time.ToDatetime()
        ended = await running.wait(run.id, within=15)
        assert ended.state == run_pb2.RUN_STATE_COMPLETED
        assert not ended.HasField("pause_expire_time")
        assert running.applied_writes() == []
        ((content, is_error),) = tool_results(await running.messages(ended))
        assert is_error
        assert "in time" in content
