"""Runtime benchmarks: the agent loop's own cost per step, and 1,000 runs parked on a confirmation.

Store, provider (demo model, no token delay) and confirm run as deployed, each in its own process (SQLite), logging
at WARNING; the tools are the example notes MCP server over stdio, started by the runtime.

- Per-step overhead: sequential "Please list_notes" runs (a read-tool step, then an answer step), each in a new
  conversation and followed on StreamRunEvents as the gateway would, on a runtime in this process (logging at
  WARNING, as the other services). A step's wall time is taken on the runtime's own clock, through a hook: from
  the step's start (its before-model-call hook) to the next step's start, or, for the last step, to the moment the
  run's end is durable (the event tap on `run_completed`). Subtracted: model time (the runtime awaiting each chunk
  of the provider's Generate stream) and tool time (the Toolbox call: MCP client, stdio, notes server). What
  remains is the runtime's work and what it waits on: event appends and checkpoints (store round trips) that are
  not overlapped with the model, hooks, and its handling of every chunk. Run start (CreateRun called to step 1's
  start) is reported on its own.
- Parked runs: the runtime in its own process (`python -m services.runtime`). Its RSS (/proc VmRSS) after warm-up
  runs, then with 500 and 1,000 runs paused on a `create_note` confirmation (started 16 at a time); its peak
  (VmHWM). Then all are approved at once (16 decisions in flight): time from the first decision to the last run's
  end (`end_time`); all should complete, with exactly 1,000 new applied writes, one per confirmation.

Targets (issue acceptance): <= 5 ms p95 per step; <= 50 MB for 1,000 parked runs.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import grpc

from bench.runtime_stack import Backing, Client, backing_services, runtime_process
from bench.store import percentile
from examples.notes_mcp.store import read_applied_writes
from services.runtime import server as runtime_server
from services.runtime.agents import AgentSpec
from services.runtime.hooks import Hook, ModelRequest, StepInfo
from services.runtime.settings import RuntimeSettings
from services.runtime.tools.model import Proposal
from services.runtime.tools.registry_toolbox import toolbox_from_settings
from services.runtime.tools.toolbox import Toolbox, ToolInfo, ToolOutcome, ToolServerInfo
from services.store.db.run_rows import TERMINAL_EVENT_KINDS
from steward.confirm.v1.confirm_service_pb2 import DecideConfirmationRequest
from steward.confirm.v1.confirmation_pb2 import SURFACE_GRPC
from steward.logs import configure_logging
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2

WARM_UP = 20
LOOP_RUNS = 200
PARKED = 1000
IN_FLIGHT = 16  # more only adds contention on this machine
SETTLE = 90.0  # seconds the approved runs may take to end
TARGET_STEP_MS = 5.0
TARGET_PARKED_MB = 50.0
APPROVE = '{"outcome": "approve"}'


@dataclass
class StepClock(Hook):
    """The runtime's own clock (time.perf_counter), per (run id, step): when each step began (the runtime's
    before-model-call hook), when the run's end was durable (its event tap), and the seconds it spent awaiting the
    model and tools."""

    began: dict[tuple[str, int], float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    end_seen: defaultdict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    model: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    tools: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    step: dict[str, int] = field(default_factory=dict)  # the step each run last asked the model for

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        self.began.setdefault((step.run.id, step.number), time.perf_counter())  # a restarted step keeps its first start

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        if event.WhichOneof("payload") in TERMINAL_EVENT_KINDS:
            self.ended[run_id] = time.perf_counter()
            self.end_seen[run_id].set()


class TimedStream:
    """A Generate call (as the runtime uses it: iterated, then cancelled) that times every wait for a chunk."""

    def __init__(self, call: Any, clock: StepClock, key: tuple[str, int]) -> None:
        self._call, self._chunks, self._clock, self._key = call, aiter(call), clock, key

    def __aiter__(self) -> TimedStream:
        return self

    async def __anext__(self) -> Any:
        started = time.perf_counter()
        try:
            return await anext(self._chunks)
        finally:
            self._clock.model[self._key] += time.perf_counter() - started

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class TimedProvider:
    def __init__(self, channel: grpc.aio.Channel, clock: StepClock) -> None:
        self._stub, self._clock = provider_grpc.ProviderServiceStub(channel), clock

    def Generate(self, request: provider_pb.GenerateRequest, **kwargs: Any) -> TimedStream:
        self._clock.step[request.run_id] = request.step
        return TimedStream(self._stub.Generate(request, **kwargs), self._clock, (request.run_id, request.step))


class TimedToolbox:
    """The runtime's toolbox, timing each call (its key is "<run id>:<tool call id>")."""

    def __init__(self, inner: Toolbox, clock: StepClock) -> None:
        self._inner, self._clock = inner, clock

    async def tools_for(self, agent: AgentSpec, mode: int) -> list[ToolInfo]:
        return await self._inner.tools_for(agent, mode)

    def validate(self, tool: ToolInfo, arguments: object) -> str | None:
        return self._inner.validate(tool, arguments)

    def catalogue(self) -> tuple[list[ToolInfo], list[ToolServerInfo]]:
        return self._inner.catalogue()

    async def call(self, tool: ToolInfo, arguments: dict[str, object], *, key: str, time_limit: float) -> ToolOutcome:
        run_id, started = key.split(":", 1)[0], time.perf_counter()
        try:
            return await self._inner.call(tool, arguments, key=key, time_limit=time_limit)
        finally:
            self._clock.tools[run_id, self._clock.step.get(run_id, 0)] += time.perf_counter() - started

    async def propose(
        self, tool: ToolInfo, arguments: dict[str, object], *, time_limit: float
    ) -> Proposal | str | None:
        return await self._inner.propose(tool, arguments, time_limit=time_limit)


def step_samples(run_id: str, called: float, events: list[ev.RunEvent], clock: StepClock) -> dict[str, float]:
    """Milliseconds: run start, and per step its overhead, model time and tool time (see the module docstring)."""
    if events[-1].WhichOneof("payload") != "run_completed":
        raise RuntimeError(f"run {run_id} did not complete: {events}")
    steps = sorted({event.step for event in events if event.HasField("step_started")})
    starts = [clock.began[run_id, step] for step in steps]
    ends = [*starts[1:], clock.ended[run_id]]
    samples = {"start": starts[0] - called}
    for step, begun, ended in zip(steps, starts, ends, strict=True):
        model, tools = clock.model[run_id, step], clock.tools[run_id, step]
        samples |= {f"step {step}": ended - begun - model - tools, f"model {step}": model, f"tool {step}": tools}
    return {name: seconds * 1000 for name, seconds in samples.items()}


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.2f} ms, p95 {percentile(values, 95):.2f} ms"


async def step_overhead(backing: Backing) -> None:
    clock = StepClock()
    settings = RuntimeSettings.model_validate(backing.runtime_settings())
    toolbox, close_tools = await toolbox_from_settings(settings)
    stubs = SimpleNamespace(ProviderServiceStub=lambda channel: TimedProvider(channel, clock))
    with mock.patch.object(runtime_server, "provider_grpc", stubs):  # create_server takes no provider stub
        runtime = await runtime_server.create_server(
            settings, "127.0.0.1:0", toolbox=TimedToolbox(toolbox, clock), hooks=[clock]
        )
    client = Client(backing, f"127.0.0.1:{runtime.port}")
    samples: defaultdict[str, list[float]] = defaultdict(list)
    try:
        await client.create_agent()
        for index in range(WARM_UP + LOOP_RUNS):
            run_id, called = await client.start("Please list_notes")
            events = await client.follow(run_id, set())
            # The reader may see the end before the runtime's tap runs.
            await asyncio.wait_for(clock.end_seen[run_id].wait(), 10)
            measured = step_samples(run_id, called, events, clock)
            for name, value in measured.items() if index >= WARM_UP else ():
                samples[name].append(value)
    finally:
        await client.close()
        await runtime.stop(0.5)
        if close_tools is not None:
            await close_tools()
    steps = samples["step 1"] + samples["step 2"]
    met = percentile(steps, 95) <= TARGET_STEP_MS
    print(
        f"[runtime step] overhead per step (model and tool time excluded): {_ms(steps)} ({len(steps)} steps of "
        f"{LOOP_RUNS} read-tool runs) (target: <= {TARGET_STEP_MS:g} ms p95) {'met' if met else 'MISSED'}"
    )
    for label, step in (("tool-call step", "1"), ("answer step", "2")):
        model, tools = percentile(samples[f"model {step}"], 50), percentile(samples[f"tool {step}"], 50)
        excluded = f"excluded p50: model {model:.2f} ms, tool {tools:.2f} ms"
        print(f"[runtime step]   {label:>14}: {_ms(samples[f'step {step}'])} ({excluded})")
    print(f"[runtime step]   run start (CreateRun called to step 1 started): {_ms(samples['start'])}")


def memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def in_flight(count: int, work: Callable[[int], Awaitable[None]]) -> None:
    """work(0) .. work(count - 1), IN_FLIGHT at a time."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await work(index)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def park(client: Client, count: int) -> dict[str, str]:
    """Start `count` runs that each pause on a create_note confirmation: {run id: confirmation id}."""
    parked: dict[str, str] = {}

    async def one(index: int) -> None:
        run_id, _ = await client.start(f"create_note parked {index}")
        events = await client.follow(run_id, {"run_paused"})
        asked = [e.confirmation_requested.confirmation_id for e in events if e.HasField("confirmation_requested")]
        if events[-1].WhichOneof("payload") != "run_paused" or len(asked) != 1:
            raise RuntimeError(f"run {run_id} did not pause on one confirmation: {events}")
        parked[run_id] = asked[0]

    await in_flight(count, one)
    return parked


async def approve(client: Client, parked: dict[str, str]) -> tuple[float, float, Counter[str]]:
    """Approve every confirmation (IN_FLIGHT decisions at a time), then wait until every run ended (at most SETTLE
    seconds): seconds to send the decisions, from the first decision to the last run's end, and the runs' states."""
    ids, first = list(parked.values()), time.time()

    async def one(index: int) -> None:
        request = DecideConfirmationRequest(confirmation_id=ids[index], decision_json=APPROVE, surface=SURFACE_GRPC)
        await client.confirm.DecideConfirmation(request, metadata=client.user)

    await in_flight(len(ids), one)
    decided, deadline = time.time() - first, time.monotonic() + SETTLE
    while True:
        runs = [run for run in await client.list_runs() if run.id in parked]
        if all(run.HasField("end_time") for run in runs) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    ended = max(run.end_time.ToNanoseconds() / 1e9 for run in runs if run.HasField("end_time"))
    return decided, ended - first, Counter(run_pb2.RunState.Name(run.state)[10:].lower() for run in runs)


async def parked_runs(backing: Backing) -> None:
    notes = backing.data_dir / "notes.db"
    async with runtime_process(backing) as (pid, client):
        await client.create_agent()
        await approve(client, await park(client, WARM_UP))
        before = len(read_applied_writes(notes))
        await asyncio.sleep(1)
        rss, parked, started = [memory_mb(pid)[0]], dict[str, str](), time.perf_counter()
        for _ in range(2):
            parked |= await park(client, PARKED // 2)
            await asyncio.sleep(1)  # the last tasks look once for an early decision, then end
            rss.append(memory_mb(pid)[0])
        parking = time.perf_counter() - started
        paused = sum(run.state == run_pb2.RUN_STATE_PAUSED for run in await client.list_runs())
        peak = memory_mb(pid)[1]
        decided, took, states = await approve(client, parked)
        after = memory_mb(pid)[0]
    writes = read_applied_writes(notes)[before:]
    keys = Counter(write.idempotency_key for write in writes)
    exact = len(writes) == (confirmed := len(keys.keys() & set(parked.values()))) == PARKED
    added, met = rss[2] - rss[0], rss[2] - rss[0] <= TARGET_PARKED_MB and paused == PARKED
    print(
        f"[runtime parked] {paused} runs paused on a confirmation ({IN_FLIGHT} started at a time, {parking:.1f} s); "
        f"runtime RSS {rss[0]:.1f} MB before, {rss[1]:.1f} MB at {PARKED // 2}, {rss[2]:.1f} MB at {PARKED}: "
        f"+{added:.1f} MB (second half +{rss[2] - rss[1]:.1f} MB), peak {peak:.1f} MB "
        f"(target: <= {TARGET_PARKED_MB:g} MB for {PARKED}) {'met' if met else 'MISSED'}"
    )
    ok = states["completed"] == PARKED and exact
    print(
        f"[runtime parked] all {PARKED} approved (decisions sent in {decided:.1f} s): the last run ended {took:.1f} s "
        f"after the first decision; {', '.join(f'{n} {state}' for state, n in states.most_common())}; "
        f"{len(writes)} writes applied, for {confirmed} of the confirmations"
        f"{' (some twice!)' if len(keys) < len(writes) else ''}; "
        f"RSS {after:.1f} MB (expected: all completed, one write each) {'met' if ok else 'MISSED'}"
    )


async def main() -> None:
    configure_logging("bench", "WARNING", json=False)
    print(f"Runtime benchmarks (SQLite, demo model with no token delay, notes MCP server, {os.cpu_count()} cores)")
    for part in (step_overhead, parked_runs):
        with tempfile.TemporaryDirectory() as data_dir:
            async with backing_services(Path(data_dir)) as backing:
                await part(backing)
