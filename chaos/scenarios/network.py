"""F10, F11: the runtime's network path to the store misbehaves (a `FaultProxy` between them) while runs go on.

F10, executed but reported as a timeout: the proxy throws the store's replies away for short windows (1 to 1.5 s,
1.5 to 3 s apart, drawn from the seed), so that writes, claims and heartbeats land in the store while the runtime
sees no answer; each window ends with the proxy resetting its connections (the runtime sees UNAVAILABLE) and the
runtime tries again. First a batch of runs streaming the fake upstream's answer, then a batch of runs that call a
write tool (create_note) and are approved, both under the windows. Pass: every run completes within a bound; no
event is written twice (the stored logs are contiguous, each answer is the upstream's once, the events that happen
once per run happen once); each note exists once (the notes server's table is the ledger of effects). A create
answered 503 is sent again with its idempotency key (chaos/drive.py) and must make no second run. Known slow path,
within the bound: a claim (CreateRun's or a decision's ClaimRun) whose answer was lost leaves the run held by a lease
nobody drives until it expires (8 s) and a sweep takes the run over (`step_restarted`): the
`writer_approved_to_end_max_s` figure shows it.

F11, a partition: the proxy holds every byte both ways (BLACKHOLE) for the scale's partition while runs stream, then
lets them flow again. Pass: no run ends during the partition (a dependency away is waited for, ADR 0013; past the
outage bound the run is given back, and a sweep takes it once the store answers); after the heal every run sends
its next event within a bound and completes, with no event lost or written twice; and no store call of the runtime
blocks longer than its deadline (the runtime's log: the heartbeats it made while cut off failed at their
deadline and were made again, never stuck on the dead connection).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime

from chaos.checks import integrity, next_event_after, once_per_run, record_integrity
from chaos.drive import Followed, client_for, create_writer_agent, eventually, follow, notes_titled, start_runs
from chaos.faults import FaultProxy, Mode
from chaos.scenario import Context, Result, scenario
from chaos.stack import ProcessStack, StackOptions, expected_text, process_stack
from steward.client import AsyncClient

PIECES, CHUNK_DELAY = 120, 0.05  # six seconds of streaming: several windows fall on every run
WINDOW = (1.0, 1.5)  # seconds a lossy window lasts
GAP = (1.5, 3.0)  # seconds between windows
RECOVERY_BOUND = 5.0  # after a window: every streaming run's next event
END_BOUND = 60.0  # every run of a batch ends within this after its last push (start, decisions)
HEAL_BOUND = 10.0  # after the heal: every run's next event
LEASE_SECONDS = 8  # the runtime's default: a heartbeat every third of it
STORE_DEADLINE = 10.0  # the runtime's deadline on the store's RunService calls (service_configs/store.json)
# The writer runs' events that happen once whatever the windows did.
ONCE = ("confirmation_requested", "confirmation_decided", "tool_call_started", "tool_call_finished", "run_completed")


@dataclass
class Windows:
    """Lossy windows opened on a proxy in the background, until `stop`: when each ended (time.monotonic())."""

    proxy: FaultProxy
    rng: random.Random
    ends: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._chop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.proxy.mode is not Mode.PASS:
            self.proxy.set(Mode.PASS)
            self.ends.append(time.monotonic())

    async def _chop(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*GAP))
            self.proxy.set(Mode.DROP_RESPONSE)
            await asyncio.sleep(self.rng.uniform(*WINDOW))
            self.proxy.set(Mode.PASS)  # resets the connections the window cut
            self.ends.append(time.monotonic())


def _recovery(runs: list[Followed], ends: list[float]) -> float:
    """The most seconds a run streaming when a window ended took from then to its next event."""
    worst = 0.0
    for end in ends:
        started = [run for run in runs if run.arrivals and run.arrivals[0] < end]
        worst = max(worst, next_event_after(started, end)[1])
    return worst


@scenario("F10", "drop the store's replies to the runtime in short windows: streaming runs, approved write tools")
async def replies_dropped(context: Context, result: Result) -> None:
    options = StackOptions(
        database_url=context.database_url, pieces=PIECES, chunk_delay=CHUNK_DELAY, proxied=frozenset({"store"})
    )
    async with process_stack(context.data_dir, options) as stack, client_for(stack) as client:
        windows = Windows(stack.proxies["store"], random.Random(context.seed))  # noqa: S311 - a schedule, not a secret
        agent_id = await create_writer_agent(stack)
        windows.start()
        try:
            streamed = await _streaming_batch(client, result, context.scale.runs)
            writers, took = await _writer_batch(stack, client, result, context.scale.runs, agent_id)
        finally:
            await windows.stop()
        result.figure("windows", len(windows.ends))
        result.figure("dropped_bytes", stack.proxies["store"].dropped_bytes)
        record_integrity(result, await integrity(client, streamed, expected_text(PIECES)))
        record_integrity(result, await integrity(client, writers, None), prefix="writer_")
        result.failures.extend(once_per_run(writers, ONCE))
        effects = [notes_titled(stack, f"[net-{index}]") for index in range(len(writers))]
        result.figure("effects", sum(effects))
        result.expect(effects == [1] * len(writers), f"notes created per run: {effects} (each must be exactly 1)")
        recovery = _recovery(streamed, windows.ends)
        result.figure("recovery_max_s", recovery)
        result.figure("writer_approved_to_end_max_s", took)
        result.expect(recovery <= RECOVERY_BOUND, f"a run's next event came {recovery:.1f} s after a window ended")


async def _streaming_batch(client: AsyncClient, result: Result, count: int) -> list[Followed]:
    runs = await start_runs(client, count)
    follow(client, runs)
    ended = await eventually(lambda: all(run.ended or run.error for run in runs), END_BOUND)
    result.expect(ended, f"some streaming runs had not ended {END_BOUND:.0f} s after they started")
    return runs


async def _writer_batch(
    stack: ProcessStack, client: AsyncClient, result: Result, count: int, agent_id: str
) -> tuple[list[Followed], float]:
    """Runs that each create a note once approved; the most seconds from the approvals to a run's end."""
    runs = await start_runs(client, count, lambda index: f"create_note [net-{index}]", agent_id=agent_id)
    follow(client, runs)
    parked = await eventually(lambda: all(run.count("confirmation_requested") or run.ended for run in runs), END_BOUND)
    result.expect(parked, f"not every writer run asked for a decision within {END_BOUND:.0f} s")
    pending = [item async for item in client.confirmations.list()]
    result.figure("pending", len(pending))
    for confirmation in pending:
        await client.confirmations.decide(confirmation.id, "approve")
    approved = time.monotonic()
    ended = await eventually(lambda: all(run.ended or run.error for run in runs), END_BOUND)
    result.expect(ended, f"some writer runs had not ended {END_BOUND:.0f} s after the approvals")
    took = max((run.arrivals[-1] - approved for run in runs if run.ended), default=0.0)
    return runs, took


@scenario("F11", "partition the runtime from the store (blackhole) under streaming runs, then heal it")
async def store_partitioned(context: Context, result: Result) -> None:
    # The runs' own wall-clock limit (30 s of running time by default) is not what this scenario tests: a partition
    # at full scale lasts as long, and would end them incomplete.
    runtime = {"default_run_timeout": 300.0}
    # Answers that outlast the partition by a few seconds: every run is still streaming when the path heals.
    pieces = int((context.scale.partition + 6.0) / CHUNK_DELAY)
    options = StackOptions(
        database_url=context.database_url,
        pieces=pieces,
        chunk_delay=CHUNK_DELAY,
        proxied=frozenset({"store"}),
        runtime=runtime,
    )
    async with process_stack(context.data_dir, options) as stack, client_for(stack) as client:
        proxy = stack.proxies["store"]
        runs = await start_runs(client, context.scale.runs)
        follow(client, runs)
        streaming = await eventually(lambda: all(run.count("text_delta") > 0 for run in runs), 30)
        result.expect(streaming, "not every run was streaming within 30 s")
        cut, cut_wall = time.monotonic(), time.time()
        proxy.set(Mode.BLACKHOLE)
        await asyncio.sleep(context.scale.partition)
        ended_during = [run for run in runs if run.ended and run.arrivals[-1] > cut]
        healed = time.monotonic()
        proxy.set(Mode.PASS)
        within = END_BOUND + context.scale.partition
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), within)
        result.expect(ended, "some runs had not ended after the heal")
        going, worst = next_event_after(runs, healed)
        result.figure("partition_s", context.scale.partition)
        result.figure("still_going_when_healed", going)
        result.figure("next_event_after_heal_max_s", worst)
        result.figure("ended_during_partition", len(ended_during))
        record_integrity(result, await integrity(client, runs, expected_text(pieces)))
        result.expect(worst <= HEAL_BOUND, f"a run's next event came {worst:.1f} s after the heal (bound {HEAL_BOUND})")
        result.expect(not ended_during, f"{len(ended_during)} runs ended during the partition")
        restarted = sum(1 for run in runs if run.count("step_restarted"))
        result.expect(not restarted, f"{restarted} runs restarted their step: the replica took back runs it drove")
        waited = _longest_unanswered(stack, cut_wall, len(runs))
        result.figure("store_call_unanswered_max_s", waited)
        bound = STORE_DEADLINE + LEASE_SECONDS / 3 + 1.0
        result.expect(waited <= bound, f"a run's store calls went {waited:.1f} s unanswered (bound {bound:.1f} s)")


def _longest_unanswered(stack: ProcessStack, since: float, runs: int) -> float:
    """The most seconds a run's store calls (its writes and heartbeats) went without an answer from `since` (wall
    clock): each failed call of a run is logged (`write_retrying`, `heartbeat_failed`), so the longest time from
    `since` or a failure to the run's next failure is at most a call's deadline plus the wait before the next call,
    unless a call was stuck on the dead connection past its deadline."""
    failures: dict[str, list[float]] = {}
    for line in stack.log_path("runtime").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in ("write_retrying", "heartbeat_failed") and entry.get("run_id"):
            moment = datetime.fromisoformat(entry["timestamp"]).timestamp()
            if moment >= since:
                failures.setdefault(str(entry["run_id"]), []).append(moment)
    if len(failures) < runs:
        return math.inf  # a run whose calls never failed while cut off: one was stuck until the heal at least
    return max(
        later - earlier for moments in failures.values() for earlier, later in itertools.pairwise([since, *moments])
    )
