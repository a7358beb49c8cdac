"""Runtime benchmarks: the agent loop's own cost per step, and 1,000 runs parked on a confirmation.

Store, provider (demo model, no token delay) and confirm run in this process (SQLite); the tools are the example
notes MCP server over stdio, started by the runtime.

- Per-step overhead: sequential "Please list_notes" runs (a read-tool step, then an answer step), each in a new
  conversation and followed on StreamRunEvents as the gateway would, on a runtime in this process. A step's wall
  time runs from its `step_started` event to the next step's `step_started` (the last step: to `run_completed`),
  by the store's `create_time`s. Subtracted: model time (the runtime awaiting each chunk of the provider's Generate
  stream) and tool time (the Toolbox call: MCP client, stdio, notes server). What remains is the runtime's work
  and what it waits on: history reads, event appends, checkpoints (store round trips), hooks, and its handling of
  every chunk. Run start (CreateRun called to the first `step_started`) is reported on its own.
- Parked runs: the runtime in its own process (`python -m services.runtime`). Its RSS (/proc VmRSS) after warm-up
  runs, then with 500 and 1,000 runs paused on a `create_note` confirmation (started 16 at a time); its peak
  (VmHWM). Then all are approved at once (16 decisions in flight): time from the first decision to the last run's
  end (`end_time`); all should complete, with exactly 1,000 new applied writes, one per confirmation.

Targets (issue acceptance): <= 5 ms p95 per step; <= 50 MB for 1,000 parked runs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import grpc

from bench.provider import _free_port
from bench.store import percentile
from examples.notes_mcp.store import read_applied_writes
from services.confirm.server import create_server as create_confirm
from services.confirm.settings import ConfirmSettings
from services.provider.server import create_server as create_provider
from services.provider.settings import ProviderSettings
from services.runtime import server as runtime_server
from services.runtime.agents import AgentSpec
from services.runtime.settings import RuntimeSettings
from services.runtime.tool_setup import toolbox_from_settings
from services.runtime.toolbox import Toolbox, ToolInfo, ToolOutcome
from services.store.db.run_rows import TERMINAL_EVENT_KINDS
from services.store.server import create_server as create_store
from services.store.settings import StoreSettings
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.confirm.v1.confirm_service_pb2 import DecideConfirmationRequest
from steward.confirm.v1.confirmation_pb2 import SURFACE_GRPC
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.rpc.server import GrpcServer
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.grpc_helpers import principal_metadata
from tests.runtime.harness import tools_file

WARM_UP = 20
LOOP_RUNS = 200
PARKED = 1000
IN_FLIGHT = 16  # more only adds contention on this machine
SETTLE = 90.0  # seconds the approved runs may take to end
TARGET_STEP_MS = 5.0
TARGET_PARKED_MB = 50.0
APPROVE = '{"outcome": "approve"}'


@dataclass
class Backing:
    """Store, provider and confirm in this process, and the settings a runtime needs to reach them."""

    secret: str
    data_dir: Path
    servers: dict[str, GrpcServer]

    def runtime_settings(self, **more: object) -> dict[str, object]:
        return {
            "internal_secret": self.secret,
            "data_dir": str(self.data_dir),
            "log_level": "WARNING",
            "tools_file": str(tools_file(self.data_dir, self.data_dir / "notes.db")),
            **{f"{name}_address": f"127.0.0.1:{server.port}" for name, server in self.servers.items()},
            **more,
        }


@asynccontextmanager
async def backing_services(data_dir: Path) -> AsyncIterator[Backing]:
    secret = secrets.token_urlsafe(32)
    base: dict[str, object] = {"internal_secret": secret, "data_dir": data_dir, "log_json": False}
    store = {**base, "token_pepper": secrets.token_urlsafe(32), "retention_interval": 0}
    provider = {**base, "demo_token_interval": 0.0, "master_key": base64.b64encode(secrets.token_bytes(32)).decode()}
    servers = {"store": await create_store(StoreSettings.model_validate(store), "127.0.0.1:0")}
    servers["provider"] = await create_provider(ProviderSettings.model_validate(provider), "127.0.0.1:0")
    servers["confirm"] = await create_confirm(ConfirmSettings.model_validate(base), "127.0.0.1:0")
    try:
        yield Backing(secret, data_dir, servers)
    finally:
        for server in reversed(servers.values()):
            await server.stop(0.5)


class Client:
    """A user with an agent that may use the notes tools; starts runs through the runtime."""

    def __init__(self, backing: Backing, runtime_address: str) -> None:
        self.user = principal_metadata(backing.secret, f"bench-{uuid.uuid4().hex[:8]}")
        store = grpc.aio.insecure_channel(f"127.0.0.1:{backing.servers['store'].port}")
        confirm = grpc.aio.insecure_channel(f"127.0.0.1:{backing.servers['confirm'].port}")
        runtime = grpc.aio.insecure_channel(runtime_address)
        self.channels = [store, confirm, runtime]
        self.runs, self.conversations = store_grpc.RunServiceStub(store), store_grpc.ConversationServiceStub(store)
        self.agents, self.confirm = store_grpc.AgentServiceStub(store), confirm_grpc.ConfirmationServiceStub(confirm)
        self.runtime, self.agent_id = runtime_grpc.RuntimeServiceStub(runtime), ""

    async def create_agent(self) -> None:
        agent = agent_pb2.Agent(name="bench", system_prompt="You keep notes.", model_route="demo", tools=["notes.*"])
        agent.approval_policy.mode = agent_pb2.RUN_MODE_INTERACTIVE
        created = await self.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=self.user)
        self.agent_id = created.agent.id

    async def start(self, text: str) -> tuple[str, float]:
        """A run in a new conversation: its id, and when CreateRun was called (time.time)."""
        request = store_pb.CreateConversationRequest(title="bench", agent_id=self.agent_id)
        conversation = (await self.conversations.CreateConversation(request, metadata=self.user)).conversation
        block = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))
        called = time.time()
        create = runtime_pb.CreateRunRequest(conversation_id=conversation.id, input=[block])
        return (await self.runtime.CreateRun(create, metadata=self.user)).run.id, called

    async def follow(self, run_id: str, until: set[str]) -> list[ev.RunEvent]:
        """The run's events, followed live until one of the `until` kinds or the run's end."""
        request = store_pb.StreamRunEventsRequest(run_id=run_id, follow=True)
        call = self.runs.StreamRunEvents(request, metadata=self.user)
        events: list[ev.RunEvent] = []
        try:
            async for item in call:
                events.append(item.event)
                if item.event.WhichOneof("payload") in until | TERMINAL_EVENT_KINDS:
                    break
        finally:
            call.cancel()
        return events

    async def list_runs(self) -> list[run_pb2.Run]:
        runs: list[run_pb2.Run] = []
        token = ""
        while True:
            request = store_pb.ListRunsRequest(page_size=500, page_token=token)
            page = await self.runs.ListRuns(request, metadata=self.user)
            runs += page.runs
            if not (token := page.next_page_token):
                return runs

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@dataclass
class StepClock:
    """Seconds the runtime spent awaiting the model and tools, per (run id, step)."""

    model: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    tools: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    step: dict[str, int] = field(default_factory=dict)  # the step each run last asked the model for


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

    async def call(self, tool: ToolInfo, arguments: dict[str, object], *, key: str, time_limit: float) -> ToolOutcome:
        run_id, started = key.split(":", 1)[0], time.perf_counter()
        try:
            return await self._inner.call(tool, arguments, key=key, time_limit=time_limit)
        finally:
            self._clock.tools[run_id, self._clock.step.get(run_id, 0)] += time.perf_counter() - started


def _seconds(event: ev.RunEvent) -> float:
    return event.create_time.ToNanoseconds() / 1e9


def step_samples(run_id: str, called: float, events: list[ev.RunEvent], clock: StepClock) -> dict[str, float]:
    """Milliseconds: run start, and per step its overhead, model time and tool time (see the module docstring)."""
    if events[-1].WhichOneof("payload") != "run_completed":
        raise RuntimeError(f"run {run_id} did not complete: {events}")
    starts = [(event.step, _seconds(event)) for event in events if event.HasField("step_started")]
    ends = [at for _, at in starts[1:]] + [_seconds(events[-1])]
    samples = {"start": starts[0][1] - called}
    for (step, begun), ended in zip(starts, ends, strict=True):
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
        runtime = await runtime_server.create_server(settings, "127.0.0.1:0", toolbox=TimedToolbox(toolbox, clock))
    client = Client(backing, f"127.0.0.1:{runtime.port}")
    samples: defaultdict[str, list[float]] = defaultdict(list)
    try:
        await client.create_agent()
        for index in range(WARM_UP + LOOP_RUNS):
            run_id, called = await client.start("Please list_notes")
            measured = step_samples(run_id, called, await client.follow(run_id, set()), clock)
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


@asynccontextmanager
async def runtime_process(backing: Backing) -> AsyncIterator[tuple[int, Client]]:
    """`python -m services.runtime`, configured by STEWARD_* variables, once it serves; its pid and a client."""
    address = f"127.0.0.1:{_free_port()}"
    values = backing.runtime_settings(runtime_address=address)
    env = {**os.environ, **{f"STEWARD_{name.upper()}": str(value) for name, value in values.items()}}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.runtime", env=env)
    client = Client(backing, address)
    try:
        await asyncio.wait_for(client.channels[2].channel_ready(), 60)  # it binds once its tools are ready
        yield process.pid, client
    finally:
        await client.close()
        process.terminate()
        await process.wait()


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
    print(f"Runtime benchmarks (SQLite, demo model with no token delay, notes MCP server, {os.cpu_count()} cores)")
    for part in (step_overhead, parked_runs):
        with tempfile.TemporaryDirectory() as data_dir:
            async with backing_services(Path(data_dir)) as backing:
                await part(backing)
