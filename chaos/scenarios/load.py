"""L4: the client leaves after the first event.

Each of the scale's `abandoned` runs is started in its own conversation; its client opens the event stream with a
plain HTTP client, reads one event and closes the connection, as a browser tab that is closed would. The fake
upstream's answers take three seconds (60 pieces, 50 ms apart). Nobody reads the rest: the runs must still be driven
to the end, and nothing may be left behind waiting for a reader.

Pass: every run reaches a terminal state within 30 s after its upstream answer could have finished (counted from the
moment its client left, plus the answer's three seconds), no run is left queued or running, and the gateway holds no
request in flight for a stream its client left (its `steward_gateway_requests_in_flight`, within 10 s of the last
run's end). Figures: runs, terminal, the count in each state, and the longest time from a client leaving to its
run's end (the store's `end_time`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import httpx

from chaos.drive import client_for, eventually, start_runs
from chaos.scenario import Context, Result, scenario
from chaos.stack import ProcessStack, StackOptions, process_stack
from steward.client import AsyncClient, Run

PIECES, CHUNK_DELAY = 60, 0.05
ANSWER_SECONDS = PIECES * CHUNK_DELAY
TERMINAL_BOUND = 30.0  # seconds after the upstream's answer could have finished
CONCURRENCY = 20  # requests in flight at once from the scenario's own clients
STREAMS_DRAIN_BOUND = 10.0  # after every run ended: the gateway's stream handlers are gone


@scenario("L4", "the client leaves after the first event: every run still ends")
async def abandoned_after_first_event(context: Context, result: Result) -> None:
    options = StackOptions(database_url=context.database_url, pieces=PIECES, chunk_delay=CHUNK_DELAY)
    data_dir = context.data_dir / f"{result.name}-abandoned"
    data_dir.mkdir(parents=True)
    async with process_stack(data_dir, options) as stack, client_for(stack) as client:
        gate = asyncio.Semaphore(CONCURRENCY)
        runs = await start_runs(client, context.scale.abandoned)
        headers = {"Authorization": f"Bearer {stack.dev_token}"}
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30.0) as http:
            left = await asyncio.gather(*(_leave_after_first_event(http, gate, run.run_id) for run in runs))
        deadline = time.monotonic() + ANSWER_SECONDS + TERMINAL_BOUND
        finals = await _poll_until_ended(client, gate, [run.run_id for run in runs], deadline)
        _record(result, stack, finals, dict(zip([run.run_id for run in runs], left, strict=True)))
        # The gateway's handlers of the streams the clients left are gone too (the scrape itself is in flight).
        async with httpx.AsyncClient(base_url=stack.url, timeout=10.0) as http:
            in_flight: list[float] = []

            async def settled() -> bool:
                in_flight.append(await _gateway_in_flight(http))
                return in_flight[-1] <= 1

            drained = await eventually(settled, STREAMS_DRAIN_BOUND, every=0.5)
        result.figure("gateway_requests_in_flight_after", in_flight[-1])
        result.expect(drained, f"the gateway still had {in_flight[-1]:.0f} requests in flight after every run ended")


async def _gateway_in_flight(http: httpx.AsyncClient) -> float:
    response = await http.get("/metrics")
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith("steward_gateway_requests_in_flight "):
            return float(line.split()[1])
    raise RuntimeError("the gateway's /metrics has no steward_gateway_requests_in_flight")


async def _leave_after_first_event(http: httpx.AsyncClient, gate: asyncio.Semaphore, run_id: str) -> datetime:
    """Open the run's event stream, read until the first whole event, close the connection; when it was closed.
    The connection is held only that long, so the gate bounds the streams opening at once, not the runs."""
    async with gate:
        event_lines: list[str] = []
        stream_headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        async with http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=stream_headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"the event stream of {run_id} answered {response.status_code}: {response.text}")
            async for line in response.aiter_lines():
                if line and not line.startswith(":"):
                    event_lines.append(line)
                elif not line and any(item.startswith("data") for item in event_lines):
                    break  # the first whole event: leave
        # Leaving the block closes the connection, mid-stream.
        if not event_lines:
            raise RuntimeError(f"the event stream of {run_id} ended before its first event")
        return datetime.now(UTC)


async def _poll_until_ended(
    client: AsyncClient, gate: asyncio.Semaphore, run_ids: list[str], deadline: float
) -> dict[str, Run]:
    """Each run as last read: polled (through the Python client) until every one has ended or the deadline passed."""

    async def get(run_id: str) -> Run:
        async with gate:
            return await client.runs.get(run_id)

    finals: dict[str, Run] = {}
    pending = list(run_ids)
    while True:
        for run in await asyncio.gather(*(get(run_id) for run_id in pending)):
            finals[run.id] = run
        pending = [run_id for run_id in pending if not finals[run_id].ended]
        if not pending or time.monotonic() >= deadline:
            return finals
        await asyncio.sleep(0.5)


def _record(result: Result, stack: ProcessStack, finals: dict[str, Run], left: dict[str, datetime]) -> None:
    states = Counter(str(run.state) for run in finals.values())
    terminal = [run for run in finals.values() if run.ended]
    waits = [
        (run.end_time - left[run.id]).total_seconds() for run in terminal if run.end_time is not None
    ]  # from the client leaving to the run's end; negative when it ended before its client had gone
    worst = max(waits, default=0.0)
    bound = ANSWER_SECONDS + TERMINAL_BOUND
    result.figure("runs", len(finals))
    result.figure("terminal", len(terminal))
    result.figure("by_state", dict(sorted(states.items())))
    result.figure("max_time_to_terminal_s", worst)
    stuck = [run for run in finals.values() if run.state in ("queued", "running")]
    result.expect(len(terminal) == len(finals), f"{len(finals) - len(terminal)} of {len(finals)} runs did not end")
    result.expect(not stuck, f"{len(stuck)} runs were left queued or running")
    result.expect(worst <= bound, f"a run ended {worst:.1f} s after its client left (bound {bound:.0f} s)")
    if stuck:
        result.failures.append(f"runtime log tail:\n{stack.log_tail('runtime', 10)}")
