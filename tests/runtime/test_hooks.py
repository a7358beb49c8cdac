"""The runtime's hooks (services/runtime/hooks.py), end to end through the real services, the demo model and the
fake OpenAI upstream; the runtime loads the example policy (tests/runtime/hook_policy.py, docs/hooks.md) from its
`hooks` setting, as a deployment would, and a recording hook is attached in code after it.

- A hook sees a read tool's run call by call, in order, with full payloads: the run (id, user, agent,
  conversation), the step, a summary of each model request, the tool call with its arguments and its result.
- Its event tap sees every event of the run's log, in seq order, as the store keeps them, ending with
  run_completed; also for a write run resumed after its approval, which announces its confirmation again.
- The policy loaded from the setting denies a write: the model is told (the next request to the upstream holds the
  denial as the call's result), nothing ran (no confirmation, no applied write), and the run's log says so
  (tool_call_failed, HOOK_DENIED).
- A hook that raises in every method: its observing callbacks are logged and skipped (the run completes and the
  next hook still sees every call); its before_tool_call denies the call (fail closed, HOOK_FAILED).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fakes.script import FakeToolCall, Reply
from fakes.upstream import FakeUpstream
from services.runtime.hooks import (
    HOOK_DENIED,
    HOOK_FAILED,
    Deny,
    Hook,
    ModelRequest,
    ModelResponse,
    RunInfo,
    StepInfo,
    ToolCall,
    ToolResult,
)
from services.runtime.run.steps import MAX_OUTPUT_TOKENS
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, notes_agent, world
from tests.runtime.procs import eventually

Call = tuple[object, ...]
ROUTE = "scripted"
UPSTREAM = "fake-llm"
POLICY = "audit,tests.runtime.hook_policy:policy"


@dataclass
class Recorder(Hook):
    """Every hook call as (method, what matters of its payload...), the payloads themselves, and every tapped
    event, per run, in the order they came."""

    calls: dict[str, list[Call]] = field(default_factory=dict)
    payloads: dict[str, list[object]] = field(default_factory=dict)
    events: dict[str, list[run_event_pb2.RunEvent]] = field(default_factory=dict)

    def _note(self, step: StepInfo, *call: object, payloads: tuple[object, ...]) -> None:
        self.calls.setdefault(step.run.id, []).append(call)
        self.payloads.setdefault(step.run.id, []).extend((step, *payloads))

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        self._note(step, "before_model_call", step.number, request.model_route, payloads=(request,))

    async def after_model_call(self, step: StepInfo, response: ModelResponse) -> None:
        self._note(step, "after_model_call", step.number, response.tool_calls, response.error, payloads=(response,))

    async def before_tool_call(self, step: StepInfo, call: ToolCall) -> Deny | None:
        self._note(step, "before_tool_call", call.id, call.name, call.kind, payloads=(call,))
        return None

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        self._note(step, "on_tool_call_start", call.id, call.name, payloads=(call,))

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        self._note(step, "after_tool_call", call.id, call.name, result.is_error, result.reason, payloads=(call, result))

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

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        self._raise()

    async def after_model_call(self, step: StepInfo, response: ModelResponse) -> None:
        self._raise()

    async def before_tool_call(self, step: StepInfo, call: ToolCall) -> Deny | None:
        self._raise()
        return None

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        self._raise()

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        self._raise()

    async def on_event(self, run_id: str, event: run_event_pb2.RunEvent) -> None:
        self._raise()


@dataclass
class Hooked:
    world: World  # its agent on the demo model
    scripted: World  # the same stack, its agent on the fake upstream (ROUTE)
    fake: FakeUpstream
    recorder: Recorder


@pytest.fixture(scope="module")
async def hooked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hooked]:
    directory = tmp_path_factory.mktemp("hooks")
    fake = FakeUpstream(default=Reply(text="Done."))
    await fake.start()
    routes = {
        "upstreams": {UPSTREAM: {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True}},
        "routes": {ROUTE: {"description": "the fake upstream, scripted per test", "primary": f"{UPSTREAM}/model"}},
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    recorder = Recorder()
    try:
        with pytest.MonkeyPatch.context() as env:  # read by the provider's settings at start-up only
            env.setenv("STEWARD_ROUTES_FILE", str(directory / "routes.json"))
            async with world(directory, hooks=[recorder], hooks_setting=POLICY) as running:
                env.undo()
                agent = notes_agent(model_route=ROUTE, prefix="scripted")
                created = await running.agents.CreateAgent(
                    store_pb.CreateAgentRequest(agent=agent), metadata=running.user
                )
                scripted = dataclasses.replace(running, agent_id=created.agent.id)
                yield Hooked(running, scripted, fake, recorder)
    finally:
        await fake.stop()


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
        ("before_tool_call", call_id, "notes.list_notes", "read"),
        ("on_tool_call_start", call_id, "notes.list_notes"),
        ("after_tool_call", call_id, "notes.list_notes", False, ""),
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
    call_id = await tool_call_id(running, ended)
    assert recorder.calls[ended.id] == expected_calls(call_id)
    # The payloads in full: the run and its step, the model request's summary, the call and its result.
    run = RunInfo(
        id=ended.id, user_id=running.user_id, agent_id=running.agent_id, conversation_id=ended.conversation_id
    )
    payloads = recorder.payloads[ended.id]
    steps = [payload for payload in payloads if isinstance(payload, StepInfo)]
    assert [(step.run, step.number, step.model_route) for step in steps] == [(run, 1, "demo")] * 5 + [
        (run, 2, "demo")
    ] * 2
    [first, second] = [payload for payload in payloads if isinstance(payload, ModelRequest)]
    assert (first.model_route, first.message_count, first.max_tokens) == ("demo", 1, MAX_OUTPUT_TOKENS)
    assert {"notes.list_notes", "notes.create_note", "time.now", "calc"} <= set(first.tool_names)
    assert (second.message_count, second.tool_names) == (3, first.tool_names)  # + the call and its result
    call = ToolCall(id=call_id, name="notes.list_notes", kind="read", arguments={}, arguments_json="{}")
    assert [payload for payload in payloads if isinstance(payload, ToolCall)] == [call] * 3  # before, start, after
    [result] = [payload for payload in payloads if isinstance(payload, ToolResult)]
    assert not result.is_error
    assert (
        result.content
        == recorder.events[ended.id][recorder.kinds(ended.id).index("tool_call_finished")].tool_call_finished.result
    )


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
    # The policy was asked once, before the confirmation; the resumed claim ran the approved write without asking
    # again, and the write's start and result name its confirmation.
    call_id = await tool_call_id(running, ended)
    assert [
        call for call in recorder.calls[run.id] if call[0] != "before_model_call" and call[0] != "after_model_call"
    ] == [
        ("before_tool_call", call_id, "notes.create_note", "write"),
        ("on_tool_call_start", call_id, "notes.create_note"),
        ("after_tool_call", call_id, "notes.create_note", False, ""),
    ]
    started = [p for p in recorder.payloads[run.id] if isinstance(p, ToolCall) and p.confirmation_id]
    assert {p.confirmation_id for p in started} == {confirmation.id}
    assert len(started) == 2  # on_tool_call_start and after_tool_call
    assert started[0].arguments == json.loads(confirmation.arguments_json)  # parsed, as the model made them


async def confirmations_of(running: World, run_id: str) -> list[confirmation_pb2.Confirmation]:
    states = list(confirmation_pb2.ConfirmationState.values())[1:]  # every state, decided or not
    reply = await running.confirm.ListConfirmations(
        confirm_pb.ListConfirmationsRequest(run_id=run_id, states=states), metadata=running.user
    )
    return list(reply.confirmations)


async def test_a_hook_loaded_from_settings_denies_a_write_the_model_is_told_and_nothing_runs(hooked: Hooked) -> None:
    running, fake, recorder = hooked.scripted, hooked.fake, hooked.recorder
    arguments = json.dumps({"title": "Confidential: salaries", "body": "..."})
    fake.enqueue(Reply(text="", tool_calls=[FakeToolCall("call_denied", "notes__create_note", arguments)]))
    asked = len(fake.requests)
    run = await running.start_run("Write down the salaries.")
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended  # never paused: nobody was asked
    denial = "The call to notes.create_note was denied by policy (NotesPolicy): confidential notes are kept out"
    # The model is told: the next request holds the denial as the call's result.
    [_, answer] = [request.body for request in fake.requests[asked:] if request.path.endswith("/chat/completions")]
    [told] = [message for message in answer["messages"] if message["role"] == "tool"]
    assert told["tool_call_id"] == "call_denied"
    assert denial in told["content"]
    # The run's log says so, with the stable reason.
    events = await stored_events(running, run.id)
    [failed] = [event.tool_call_failed for event in events if event.HasField("tool_call_failed")]
    assert (failed.tool_call_id, failed.reason) == ("call_denied", HOOK_DENIED)
    assert failed.message.startswith(denial)
    # Nothing ran: no confirmation asked (not even one pending), no write applied, nothing started.
    assert await confirmations_of(running, run.id) == []
    assert not [write for write in running.applied_writes() if "Confidential" in json.dumps(write.arguments)]
    kinds = [event.WhichOneof("payload") for event in events]
    assert "confirmation_requested" not in kinds
    assert "tool_call_finished" not in kinds
    await eventually(lambda: "run_completed" in recorder.kinds(run.id), within=10, what="the tapped run_completed")
    # The recorder runs after the policy: it was not asked, and saw the call's denied result.
    assert [call for call in recorder.calls[run.id] if "tool" in str(call[0])] == [
        ("after_tool_call", "call_denied", "notes.create_note", True, HOOK_DENIED)
    ]


async def test_a_hook_that_raises_is_skipped_when_it_observes_and_denies_the_call_when_it_decides(
    tmp_path: Path,
) -> None:
    broken, recorder = Raising(), Recorder()
    async with world(tmp_path, hooks=[broken, recorder]) as running:
        ended = await completed_read_run(running, recorder)
        assert ended.step_count == 2  # the run goes on: the model was told, and answered
        call_id = await tool_call_id(running, ended)
        # Fail closed: the raising policy denied the read (nothing started), and the next hook was not asked.
        assert recorder.calls[ended.id] == [
            ("before_model_call", 1, "demo"),
            ("after_model_call", 1, 1, ""),
            ("after_tool_call", call_id, "notes.list_notes", True, HOOK_FAILED),
            ("before_model_call", 2, "demo"),
            ("after_model_call", 2, 0, ""),
        ]
        stored = await stored_events(running, ended.id)
        [failed] = [event.tool_call_failed for event in stored if event.HasField("tool_call_failed")]
        assert (failed.tool_call_id, failed.reason) == (call_id, HOOK_FAILED)
        assert failed.message == "The call to notes.list_notes was denied by policy (Raising): the policy check failed"
        assert [(event.seq, event.WhichOneof("payload")) for event in recorder.events[ended.id]] == [
            (event.seq, event.WhichOneof("payload")) for event in stored
        ]
        # The broken hook was called (and raised) for each event, for the five calls the recorder saw after it, and
        # for the before_tool_call that denied the read.
        assert broken.raised == len(stored) + len(recorder.calls[ended.id]) + 1
