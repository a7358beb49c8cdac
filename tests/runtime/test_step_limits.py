"""A step's tool calls and time limits, end to end: the real store, provider, confirm service, runtime and notes
MCP server (over stdio), with the model served by the wire-faithful fake OpenAI-compatible upstream, scripted per
test.

- The read calls of one step run in parallel: with the notes server frozen (SIGSTOP), both reads have begun
  (the runtime's tool-call-start hook) and neither has an answer.
- A read that passes the tool timeout ends the run incomplete (timeout), after its TOOL_TIMEOUT result; a write of
  the same step is then never proposed (NOT_RUN), and the results go with the end, in one write.
- A run waiting for its first token can be cancelled.
- A model that sends no token within the first-token timeout ends the run incomplete (timeout), with no retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from google.protobuf.duration_pb2 import Duration

from fakes.script import FakeToolCall, Reply, Stall
from fakes.upstream import FakeUpstream
from services.runtime.hooks import Hook, StepInfo, ToolCall, ToolResult
from steward.common.v1 import content_pb2, limits_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, notes_agent, world
from tests.runtime.procs import children, eventually, eventually_async

ROUTE = "scripted"
UPSTREAM = "fake-llm"


@dataclass
class ToolCalls(Hook):
    """The runtime's tool-call hooks, as (moment, tool call id) in the order they ran."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        self.seen.append(("before", call.id))

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        self.seen.append(("after", call.id))

    def of(self, *call_ids: str) -> list[tuple[str, str]]:
        return [entry for entry in self.seen if entry[1] in call_ids]


@dataclass
class Scripted:
    world: World
    fake: FakeUpstream
    hook: ToolCalls

    def model_requests(self) -> int:
        return sum(1 for request in self.fake.requests if request.path.endswith("/chat/completions"))

    @contextlib.contextmanager
    def notes_server_frozen(self) -> Iterator[int]:
        """The notes MCP server stopped (SIGSTOP) for the block: calls reach its pipe and get no answer."""
        [pid] = children(os.getpid(), str(self.world.notes_data))
        os.kill(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
async def scripted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scripted]:
    directory = tmp_path_factory.mktemp("step-limits")
    fake = FakeUpstream(default=Reply(text="Done."))
    await fake.start()
    routes = {
        "upstreams": {UPSTREAM: {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True}},
        "routes": {ROUTE: {"description": "the fake upstream, scripted per test", "primary": f"{UPSTREAM}/model"}},
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    hook = ToolCalls()
    try:
        with pytest.MonkeyPatch.context() as env:  # read by the provider's settings at start-up only
            env.setenv("STEWARD_ROUTES_FILE", str(directory / "routes.json"))
            async with world(directory, hooks=[hook]) as running:
                env.undo()
                agent = notes_agent(model_route=ROUTE, prefix="scripted")
                created = await running.agents.CreateAgent(
                    store_pb.CreateAgentRequest(agent=agent), metadata=running.user
                )
                running = dataclasses.replace(running, agent_id=created.agent.id)
                yield Scripted(running, fake, hook)
    finally:
        await fake.stop()


def list_notes(*call_ids: str) -> Reply:
    """A model turn that calls the notes server's read tool once per id (named as the provider sends it)."""
    return Reply(text="", tool_calls=[FakeToolCall(call_id, "notes__list_notes", "{}") for call_id in call_ids])


def seconds(value: float) -> Duration:
    return Duration(seconds=int(value), nanos=round((value % 1) * 1e9))


async def run_events(running: World, run_id: str) -> list[run_event_pb2.RunEvent]:
    stream = running.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=running.user)
    return [item.event async for item in stream]


def assert_ended_on_timeout(run: run_pb2.Run, events: list[run_event_pb2.RunEvent]) -> None:
    assert (run.state, run.incomplete_reason) == (run_pb2.RUN_STATE_INCOMPLETE, run_pb2.INCOMPLETE_REASON_TIMEOUT), run
    assert events[-1].WhichOneof("payload") == "run_incomplete"
    assert events[-1].run_incomplete.reason == run_pb2.INCOMPLETE_REASON_TIMEOUT
    kinds = [event.WhichOneof("payload") for event in events]
    assert "run_failed" not in kinds
    assert "run_completed" not in kinds
    assert "step_restarted" not in kinds


async def test_the_read_calls_of_a_step_run_in_parallel(scripted: Scripted) -> None:
    running = scripted.world
    scripted.fake.enqueue(list_notes("call_par_a", "call_par_b"))
    with scripted.notes_server_frozen():
        run = await running.start_run("List my notes, twice.")
        await eventually(
            lambda: len(scripted.hook.of("call_par_a", "call_par_b")) == 2, what="both reads to have begun"
        )
        # Neither read can have an answer while the server is stopped: both are in flight at once.
        assert sorted(scripted.hook.of("call_par_a", "call_par_b")) == [
            ("before", "call_par_a"),
            ("before", "call_par_b"),
        ]
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    results = [
        block.tool_result
        for message in await running.messages(ended)
        for block in message.content
        if block.HasField("tool_result")
    ]
    assert sorted(result.tool_call_id for result in results) == ["call_par_a", "call_par_b"]
    assert not any(result.is_error for result in results)


async def test_a_read_past_the_tool_timeout_ends_the_run_incomplete(scripted: Scripted) -> None:
    running = scripted.world
    scripted.fake.enqueue(list_notes("call_slow"))
    requests = scripted.model_requests()
    with scripted.notes_server_frozen():
        run = await running.start_run("List my notes.", limits=limits_pb2.RunLimits(tool_timeout=seconds(0.5)))
        ended = await running.wait(run.id)
    events = await run_events(running, run.id)
    assert_ended_on_timeout(ended, events)
    [failed] = [event.tool_call_failed for event in events if event.HasField("tool_call_failed")]
    assert (failed.tool_call_id, failed.reason) == ("call_slow", "TOOL_TIMEOUT")
    assert scripted.model_requests() == requests + 1  # the model was not asked again after the timeout
    # The conversation stays whole: the call has its (error) result, so the next run can go on from it.
    [result] = [
        block.tool_result
        for message in await running.messages(ended)
        for block in message.content
        if block.HasField("tool_result")
    ]
    assert (result.tool_call_id, result.is_error) == ("call_slow", True)
    assert "did not answer within 0.5 s" in result.content


async def test_a_read_timeout_ends_the_run_before_anyone_is_asked_about_the_steps_write(scripted: Scripted) -> None:
    running = scripted.world
    write = FakeToolCall("call_write", "notes__create_note", json.dumps({"title": "Never proposed"}))
    scripted.fake.enqueue(Reply(text="", tool_calls=[FakeToolCall("call_read", "notes__list_notes", "{}"), write]))
    with scripted.notes_server_frozen():
        run = await running.start_run("Note it.", limits=limits_pb2.RunLimits(tool_timeout=seconds(0.5)))
        ended = await running.wait(run.id)
    events = await run_events(running, run.id)
    assert_ended_on_timeout(ended, events)
    failed = {
        event.tool_call_failed.tool_call_id: event.tool_call_failed.reason
        for event in events
        if event.HasField("tool_call_failed")
    }
    assert failed == {"call_read": "TOOL_TIMEOUT", "call_write": "NOT_RUN"}
    kinds = [event.WhichOneof("payload") for event in events]
    assert "confirmation_requested" not in kinds
    # The results and the end are one write: the last step's results sit right before the end.
    assert kinds[-3:] == ["tool_call_failed", "tool_call_failed", "run_incomplete"]
    every_state = [state for state in confirmation_pb2.ConfirmationState.values() if state]
    confirmations = await running.confirm.ListConfirmations(
        confirm_pb.ListConfirmationsRequest(run_id=run.id, states=every_state), metadata=running.user
    )
    assert list(confirmations.confirmations) == []  # nobody was asked
    assert running.applied_writes() == []
    # Every call of the step has its result, so a later run in the conversation has nothing left owed.
    results = {
        block.tool_result.tool_call_id: block.tool_result.is_error
        for message in await running.messages(ended)
        for block in message.content
        if block.HasField("tool_result")
    }
    assert results == {"call_read": True, "call_write": True}


async def test_a_run_waiting_for_its_first_token_can_be_cancelled(scripted: Scripted) -> None:
    running = scripted.world
    scripted.fake.enqueue(Stall(seconds=5.0, after_chunks=1, then=Reply(text="Too late.")))
    started = time.monotonic()
    run = await running.start_run("Hello", limits=limits_pb2.RunLimits(first_token_timeout=seconds(10)))
    await eventually_async(lambda: step_started(running, run.id), what="the step to be under way")
    await running.runtime.CancelRun(runtime_pb.CancelRunRequest(id=run.id), metadata=running.user)
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_CANCELLED, ended
    assert time.monotonic() - started < 4.5  # not after the stall
    events = await run_events(running, run.id)
    assert events[-1].WhichOneof("payload") == "run_cancelled"
    assert not any(event.HasField("text_delta") for event in events)


async def step_started(running: World, run_id: str) -> bool:
    return any(event.HasField("step_started") for event in await run_events(running, run_id))


async def test_a_model_silent_past_the_first_token_timeout_ends_the_run_incomplete(scripted: Scripted) -> None:
    running = scripted.world
    # The upstream accepts the request and sends its first chunk (the role, no content), then nothing for 5 s.
    scripted.fake.enqueue(Stall(seconds=5.0, after_chunks=1, then=Reply(text="Too late.")))
    requests = scripted.model_requests()
    started = time.monotonic()
    run = await running.start_run("Hello", limits=limits_pb2.RunLimits(first_token_timeout=seconds(0.5)))
    ended = await running.wait(run.id)
    assert time.monotonic() - started < 4.5  # ended by the limit, not by the stall's end
    events = await run_events(running, run.id)
    assert_ended_on_timeout(ended, events)
    assert not any(event.HasField("text_delta") for event in events)
    assert scripted.model_requests() == requests + 1  # the step was not retried
    messages = await running.messages(ended)
    assert messages[-1].role == content_pb2.ROLE_USER  # no answer was recorded


async def test_the_wall_clock_limit_counts_the_running_time_of_every_claim(scripted: Scripted) -> None:
    # Each claim alone stays under the limit (1.5 s); the two together do not. Paused time does not count.
    running = scripted.world
    write = FakeToolCall("call_note", "notes__create_note", json.dumps({"title": "Slowly"}))
    scripted.fake.enqueue(
        Stall(seconds=0.9, after_chunks=1, then=Reply(text="", tool_calls=[write])),
        Stall(seconds=0.9, after_chunks=1, then=Reply(text="Done.")),
    )
    run = await running.start_run("Note it, slowly.", limits=limits_pb2.RunLimits(timeout=seconds(1.5)))
    paused = await running.wait(run.id, paused=True)
    first_claim = paused.running_time.ToMilliseconds()
    assert 900 <= first_claim < 1500, paused.running_time
    await asyncio.sleep(1.0)  # paused: not counted
    confirmation = await running.pending_confirmation(run.id)
    await running.decide(confirmation.id, {"outcome": "approve"})
    ended = await running.wait(run.id)
    events = await run_events(running, run.id)
    assert_ended_on_timeout(ended, events)
    assert "run_resumed" in [event.WhichOneof("payload") for event in events]
    # The whole of the limit was used; with a limit per claim, the second (0.9 s of model) would have completed.
    assert ended.running_time.ToMilliseconds() >= 1500
    assert [write.idempotency_key for write in running.applied_writes()] == [confirmation.id]  # approved: made once
