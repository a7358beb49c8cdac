"""kill -9 the runtime process (a) mid-stream, (b) during a read tool, (c) after an approved write was sent but
before its result was recorded, (d) while paused. After a restart every run reaches a terminal state, the notes
server's own record shows each approved write applied exactly once, and stream readers see a gap-free log.

The store, provider (demo model) and confirm services run in this process; the runtime is a real process
(`python -m services.runtime`, lease 2 s, sweep 0.5 s) running the example notes MCP server over stdio. The
restarted runtime finds a crashed run by its sweeps: ClaimRuns once the dead holder's lease expired, and the
decision sweep for a paused run (resumed: run_resumed) or for one killed while executing an approved write (its
decision is unacknowledged: taken over, step_restarted). Every test reads the run's log twice: live, from before
the kill, with StreamRunEvents(follow), and replayed once the run ended; both must be the same gap-free log.

(b) The example server has no slow read tool, so the read is held in flight by freezing the server (SIGSTOP).
(c) SIGKILL of the runtime alone leaves its stdio notes server running: it finishes a write it has read (exactly
once, under the approved confirmation's key) and exits at the end of its input. Killed with the runtime, it dies
inside the write's delay and nothing is applied. Either way the non-idempotent create is never re-run silently:
the user is asked (OUTCOME_UNKNOWN), and a retry carries the new confirmation's key. What holds in general is "at
most once per key"; a user who approves a retry of a write that did land gets it twice, as the preview warns.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirmation_pb2, execution_pb2
from steward.store.v1 import run_pb2
from tests.runtime.procs import RuntimeProcess, alive, backplane, bytes_read, eventually, runtimes, stdin_waiting
from tests.runtime.procs_client import (
    User,
    kinds,
    seed_note,
    text_after_last_restart,
    whole_log,
)

pytestmark = [pytest.mark.processes, pytest.mark.timeout(60)]

DELAY = 1.0  # seconds an approved write waits in the notes server before it applies (edited_arguments)
OUTCOME_UNKNOWN = confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN


@dataclass
class Crash:
    runtime: RuntimeProcess
    user: User

    async def running(self) -> RuntimeProcess:
        """The runtime, started if a test left it dead."""
        if not self.runtime.running:
            await self.runtime.start()
        return self.runtime


@pytest.fixture(scope="module")
async def crash(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Crash]:
    directory = tmp_path_factory.mktemp("crash")
    notes = directory / "notes.db"
    # 10 ms per token: a long answer streams for over a second, a short one for about 0.4 s.
    async with (
        backplane(directory, demo_token_interval=0.01) as plane,
        runtimes(plane, directory, notes, ["crash-runtime"]) as [runtime],
    ):
        user = User(plane, notes)
        await user.create_agent()
        try:
            yield Crash(runtime, user)
        finally:
            await user.close()


async def results_of(user: User, run: run_pb2.Run) -> list[content_pb2.ToolResultBlock]:
    """The tool results in the run's conversation."""
    return [block.tool_result for m in await user.messages(run) for block in m.content if block.HasField("tool_result")]


async def approve_slow_write(
    user: User, runtime: RuntimeProcess, run_id: str, arguments: dict[str, object]
) -> confirmation_pb2.Confirmation:
    """Approve the run's pending write with `delay_seconds` added, and return once the notes server has read
    the call (it is then inside its delay: accepted, not applied)."""
    await user.wait(run_id, paused=True)
    approved = await user.pending(run_id)
    server = runtime.tool_server()
    before = bytes_read(server)  # the server is idle while the run is paused
    edited = {**arguments, "delay_seconds": DELAY}
    await user.decide(approved.id, {"outcome": "approve", "edited_arguments": edited})
    await eventually(lambda: bytes_read(server) > before, what="the notes server to read the write call")
    assert user.applied_writes(approved.id) == [], "the write applied before the kill: too slow a machine"
    return approved


async def test_killed_mid_stream_the_step_restarts_and_the_run_completes(crash: Crash) -> None:
    runtime, user = await crash.running(), crash.user
    run = await user.start_run(runtime, "Tell me something. " + "word " * 76)  # the answer quotes it: ~110 tokens
    follower = user.follow(run.id)
    await eventually(lambda: follower.seen("text_delta"), what="the first text delta")
    await runtime.kill()
    await runtime.start()

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    events = await whole_log(user, run.id, follower)
    names = kinds(events)
    assert names.count("step_restarted") == 1, names
    restart = names.index("step_restarted")
    assert "text_delta" in names[:restart]  # killed while text was arriving,
    assert "usage" not in names[:restart]  # before the step was checkpointed
    restarted = events[restart]
    assert (restarted.step, restarted.step_restarted.lease_epoch) == (1, ended.lease_epoch)
    partial = "".join(e.text_delta.text for e in events[:restart] if e.HasField("text_delta"))
    answer = text_after_last_restart(events)
    assert answer.startswith("This is Steward's offline demo model")
    assert answer.endswith("talk to a real model (docs/real-model.md).")
    assert answer.startswith(partial)
    assert len(partial) < len(answer)
    assert names.count("run_completed") == 1
    assert ended.step_count == 1


async def test_killed_during_a_read_tool_the_read_runs_again_and_the_run_completes(crash: Crash) -> None:
    # The example server has no slow read: freezing it (SIGSTOP) holds the read call in flight instead.
    runtime, user = await crash.running(), crash.user
    server = runtime.tool_server()
    os.kill(server, signal.SIGSTOP)
    try:
        run = await user.start_run(runtime, "Please list_notes")
        follower = user.follow(run.id)
        await eventually(lambda: stdin_waiting(server) > 0, what="the read call to reach the notes server")
        await eventually(lambda: follower.seen("tool_call_started"), what="the read call in the log")
        await runtime.kill()
    finally:
        os.kill(server, signal.SIGCONT)  # it answers into a closed pipe and exits
    await runtime.start()

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    names = kinds(await whole_log(user, run.id, follower))
    assert names.count("step_restarted") == 1, names
    assert names.count("tool_call_started") == 1
    assert names.count("tool_call_finished") == 1
    assert names.index("tool_call_started") < names.index("step_restarted") < names.index("tool_call_finished")
    [result] = await results_of(user, ended)
    assert not result.is_error
    assert '"notes"' in result.content
    await eventually(lambda: not alive(server), what="the orphaned notes server to exit")


async def test_killed_during_an_approved_create_the_user_is_asked_and_it_applies_once(crash: Crash) -> None:
    # The runtime dies while the (non-idempotent) write is in the notes server's delay; the server finishes it.
    runtime, user = await crash.running(), crash.user
    run = await user.start_run(runtime, "create_note Groceries")
    follower = user.follow(run.id)
    approved = await approve_slow_write(user, runtime, run.id, {"title": "Groceries"})
    server = runtime.tool_server()
    await runtime.kill()  # the runtime only: its notes server goes on with the write it accepted
    await eventually(lambda: len(user.applied_writes(approved.id)) == 1, what="the orphaned write to apply")
    await eventually(lambda: not alive(server), what="the orphaned notes server to exit")
    await runtime.start()

    # The ledger says STARTED, the tool is not idempotent: never re-run silently, ask.
    await user.wait(run.id, paused=True)
    unknown = await user.pending(run.id)
    assert (unknown.kind, unknown.related_confirmation_id) == (OUTCOME_UNKNOWN, approved.id)
    assert (await user.execution(approved.id)).state == execution_pb2.EXECUTION_STATE_OUTCOME_UNKNOWN
    await user.decide(unknown.id, {"outcome": "reject", "reason": "it did happen"})

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    [write] = user.applied_writes(approved.id)
    assert write.arguments == {"title": "Groceries", "delay_seconds": DELAY}
    assert user.applied_writes(unknown.id) == []
    names = kinds(await whole_log(user, run.id, follower))
    assert names.count("step_restarted") == 1, names
    assert names.index("confirmation_decided") < names.index("step_restarted")  # taken over mid-write
    assert names.count("confirmation_requested") == 2
    assert names.count("tool_call_failed") == 1
    assert "tool_call_finished" not in names
    [result] = await results_of(user, ended)
    assert result.is_error
    assert "chose not to try it again" in result.content


async def test_killed_with_its_tool_server_during_an_approved_create_a_retry_applies_it_once(crash: Crash) -> None:
    # Runtime and notes server die while the write waits in its delay: it never applied. The user retries.
    runtime, user = await crash.running(), crash.user
    run = await user.start_run(runtime, "create_note Tickets")
    follower = user.follow(run.id)
    approved = await approve_slow_write(user, runtime, run.id, {"title": "Tickets"})
    await runtime.kill(with_tool_servers=True)
    assert user.applied_writes(approved.id) == []
    await runtime.start()

    await user.wait(run.id, paused=True)
    unknown = await user.pending(run.id)
    assert (unknown.kind, unknown.related_confirmation_id) == (OUTCOME_UNKNOWN, approved.id)
    await user.decide(unknown.id, {"outcome": "approve"})

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert user.applied_writes(approved.id) == []
    [write] = user.applied_writes(unknown.id)  # the retry carries the new confirmation's key
    assert write.arguments == {"title": "Tickets", "delay_seconds": DELAY}
    assert (await user.execution(unknown.id)).state == execution_pb2.EXECUTION_STATE_FINISHED
    names = kinds(await whole_log(user, run.id, follower))
    assert names.count("step_restarted") == 1, names
    assert names.index("confirmation_decided") < names.index("step_restarted")
    assert names.count("tool_call_finished") == 1
    assert "tool_call_failed" not in names
    [result] = await results_of(user, ended)
    assert not result.is_error
    assert "Tickets" in result.content


async def test_killed_during_an_approved_idempotent_update_it_is_retried_with_its_key_once(crash: Crash) -> None:
    runtime, user = await crash.running(), crash.user
    note_id = seed_note(user.notes_data, "Shoping")
    conversation = await user.conversation_with_call(
        "Fix the typo in my note's title.", "notes.update_note", {"id": note_id, "title": "Shopping"}
    )
    run = await user.start_run(runtime, conversation_id=conversation)
    follower = user.follow(run.id)
    approved = await approve_slow_write(user, runtime, run.id, {"id": note_id, "title": "Shopping"})
    await runtime.kill()  # the orphaned notes server applies it; the restarted runtime retries with the same key
    await runtime.start()

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert await user.confirmations(run.id) == []  # nobody was asked again: the tool is idempotent
    [write] = user.applied_writes(approved.id)
    assert write.tool == "update_note"
    assert write.result["note"]["title"] == "Shopping"
    execution = await user.execution(approved.id)
    assert (execution.state, execution.idempotency_key) == (execution_pb2.EXECUTION_STATE_FINISHED, approved.id)
    events = await whole_log(user, run.id, follower)
    names = kinds(events)
    assert names.count("step_restarted") == 1, names
    assert names.index("confirmation_decided") < names.index("step_restarted") < names.index("tool_call_finished")
    assert events[names.index("step_restarted")].step_restarted.lease_epoch == ended.lease_epoch
    assert names.count("tool_call_finished") == 1
    assert "tool_call_failed" not in names
    [result] = await results_of(user, ended)
    assert not result.is_error
    assert "Shopping" in result.content


async def test_killed_while_paused_a_decision_made_meanwhile_resumes_the_run(crash: Crash) -> None:
    runtime, user = await crash.running(), crash.user
    run = await user.start_run(runtime, "create_note Holidays")
    follower = user.follow(run.id)
    await user.wait(run.id, paused=True)
    approved = await user.pending(run.id)
    await runtime.kill()
    await user.decide(approved.id, {"outcome": "approve"})  # no runtime is running
    assert (await user.run(run.id)).state == run_pb2.RUN_STATE_PAUSED
    await runtime.start()

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    [write] = user.applied_writes(approved.id)
    assert write.arguments == {"title": "Holidays"}
    names = kinds(await whole_log(user, run.id, follower))
    assert "step_restarted" not in names  # a paused run holds nothing: it is resumed, not taken over
    assert (names.count("run_paused"), names.count("run_resumed")) == (1, 1), names
    assert names.count("tool_call_finished") == 1
