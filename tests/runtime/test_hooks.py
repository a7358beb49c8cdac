"""The runtime's hooks (services/runtime/hooks.py), end to end through the real services and the demo model.

- A hook sees a read tool's run call by call, in order: the model call of step 1 (one tool call), the tool call,
  then the model call of step 2 (no tool call).
- Its event tap sees every event of the run's log, in seq order, as the store keeps them, ending with
  run_completed; also for a write run resumed after its approval, which announces its confirmation again.
- A hook that raises in every method breaks nothing: the run completes and the next hook still sees every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.runtime.hooks import Hook
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, world
from tests.runtime.procs import eventually

Call = tuple[object, ...]


@dataclass
class Recorder(Hook):
    """Every hook call as (method, arguments...) and every tapped event, per run, in the order they came."""

    calls: dict[str, list[Call]] = field(default_factory=dict)
    events: dict[str, list[run_event_pb2.RunEvent]] = field(default_factory=dict)

    def _note(self, run_id: str, *call: object) -> None:
        self.calls.setdefault(run_id, []).append(call)

    async def before_model_call(self, run_id: str, step: int, model_route: str) -> None:
        self._note(run_id, "before_model_call", step, model_route)

    async def after_model_call(self, run_id: str, step: int, tool_calls: int, error: str = "") -> None:
        self._note(run_id, "after_model_call", step, tool_calls, error)

    async def before_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, confirmation_id: str) -> None:
        self._note(run_id, "before_tool_call", tool_call_id, tool_name, confirmation_id)

    async def after_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, is_error: bool) -> None:
        self._note(run_id, "after_tool_call", tool_call_id, tool_name, is_error)

    async def on_event(self, run_id: str, event: run_event_pb2.RunEvent) -> None:
        copy = run_event_pb2.RunEvent()
        copy.CopyFrom(event)  # as it was when tapped
        self.events.setdefault(run_id, []).append(copy)

    def kinds(self, run_id: str) -> list[str]:
        return [str(event.WhichOneof("payload")) for event in self.events.get(run_id, [])]


@dataclass
class Raising(Hook):
    """Raises in every method; counts how often it was called (so the test knows it did raise)."""

    raised: int = 0

    def _raise(self) -> None:
        self.raised += 1
        raise RuntimeError("a broken plugin")

    async def before_model_call(self, run_id: str, step: int, model_route: str) -> None:
        self._raise()

    async def after_model_call(self, run_id: str, step: int, tool_calls: int, error: str = "") -> None:
        self._raise()

    async def before_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, confirmation_id: str) -> None:
        self._raise()

    async def after_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, is_error: bool) -> None:
        self._raise()

    async def on_event(self, run_id: str, event: run_event_pb2.RunEvent) -> None:
        self._raise()


@dataclass
class Hooked:
    world: World
    recorder: Recorder


@pytest.fixture(scope="module")
async def hooked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hooked]:
    recorder = Recorder()
    async with world(tmp_path_factory.mktemp("hooks"), hooks=[recorder]) as running:
        yield Hooked(running, recorder)


async def stored_events(running: World, run_id: str) -> list[run_event_pb2.RunEvent]:
    stream = running.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=running.user)
    return [item.event async for item in stream]


async def tool_call_id(running: World, run: run_pb2.Run) -> str:
    """The id of the run's one tool call, as the model made it."""
    [call_id] = [
        block.tool_call.id
        for message in await running.messages(run)
        for block in message.content
        if block.HasField("tool_call")
    ]
    return call_id


def expected_calls(call_id: str) -> list[Call]:
    return [
        ("before_model_call", 1, "demo"),
        ("after_model_call", 1, 1, ""),
        ("before_tool_call", call_id, "notes.list_notes", ""),
        ("after_tool_call", call_id, "notes.list_notes", False),
        ("before_model_call", 2, "demo"),
        ("after_model_call", 2, 0, ""),
    ]


async def completed_read_run(running: World, recorder: Recorder) -> run_pb2.Run:
    """A run with one read tool call, ended completed, once the recorder has tapped its last event."""
    run = await running.start_run("Please list_notes")
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    # The tap sees an event once the store has it: the run can read as completed a moment before.
    await eventually(lambda: "run_completed" in recorder.kinds(run.id), within=10, what="the tapped run_completed")
    return ended


def without_store_stamps(event: run_event_pb2.RunEvent) -> run_event_pb2.RunEvent:
    copy = run_event_pb2.RunEvent()
    copy.CopyFrom(event)
    copy.ClearField("run_id")
    copy.ClearField("create_time")
    return copy


async def test_a_hook_sees_the_model_and_tool_calls_of_a_read_run_in_order(hooked: Hooked) -> None:
    running, recorder = hooked.world, hooked.recorder
    ended = await completed_read_run(running, recorder)
    assert ended.step_count == 2
    assert recorder.calls[ended.id] == expected_calls(await tool_call_id(running, ended))


async def test_the_event_tap_sees_the_stored_log_in_seq_order_ending_with_run_completed(hooked: Hooked) -> None:
    running, recorder = hooked.world, hooked.recorder
    ended = await completed_read_run(running, recorder)
    tapped = recorder.events[ended.id]
    stored = await stored_events(running, ended.id)
    assert [event.seq for event in tapped] == list(range(1, len(tapped) + 1))  # in order, none missed or repeated
    assert tapped[-1].WhichOneof("payload") == "run_completed"
    assert [(event.seq, event.WhichOneof("payload")) for event in tapped] == [
        (event.seq, event.WhichOneof("payload")) for event in stored
    ]
    # The same events, not only the same kinds (the store adds the run id and its time).
    assert [without_store_stamps(event) for event in tapped] == [without_store_stamps(event) for event in stored]
    kinds = recorder.kinds(ended.id)
    assert kinds[0] == "run_started"
    assert kinds.index("tool_call_finished") < kinds.index("run_completed")


async def test_the_event_tap_of_a_resumed_write_run_sees_each_event_once_in_seq_order(hooked: Hooked) -> None:
    # Resumed after the approval, the run announces its confirmation again (append_once, keyed so that the store
    # appends it once); the tap must not see it twice either.
    running, recorder = hooked.world, hooked.recorder
    run = await running.start_run("create_note Tapped once")
    await running.wait(run.id, paused=True)
    confirmation = await running.pending_confirmation(run.id)
    await running.decide(confirmation.id, {"outcome": "approve"})
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    await eventually(lambda: "run_completed" in recorder.kinds(run.id), within=10, what="the tapped run_completed")
    tapped = recorder.events[run.id]
    stored = await stored_events(running, run.id)
    assert [event.seq for event in tapped] == list(range(1, len(tapped) + 1))
    assert [without_store_stamps(event) for event in tapped] == [without_store_stamps(event) for event in stored]
    assert recorder.kinds(run.id).count("confirmation_requested") == 1
    assert recorder.kinds(run.id).count("run_resumed") == 1


async def test_a_hook_that_raises_everywhere_breaks_neither_the_run_nor_the_next_hook(tmp_path: Path) -> None:
    broken, recorder = Raising(), Recorder()
    async with world(tmp_path, hooks=[broken, recorder]) as running:
        ended = await completed_read_run(running, recorder)
        assert ended.step_count == 2
        assert recorder.calls[ended.id] == expected_calls(await tool_call_id(running, ended))
        stored = await stored_events(running, ended.id)
        assert [(event.seq, event.WhichOneof("payload")) for event in recorder.events[ended.id]] == [
            (event.seq, event.WhichOneof("payload")) for event in stored
        ]
        # The broken hook was called (and raised) for each of the six calls and each event before the recorder.
        assert broken.raised == len(expected_calls("")) + len(stored)
