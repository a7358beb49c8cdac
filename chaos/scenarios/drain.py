"""F6: SIGTERM to each service in turn, under streaming runs and a client making calls, and the service started again.

One stack; for each of store, provider, confirm, runtime and gateway: runs start streaming, a prober reads through
the HTTP API every 50 ms, a watcher polls the service's readiness (gRPC health, or the gateway's /readyz), and the
service gets SIGTERM (grace 3 s, drain pause 0.5 s). Pass: the service says it is not ready before it stops
answering; it exits 0 within grace + 2 s; no call the prober made answered 5xx (a call to a service that is
restarting waits for it); every run completes with its answer exactly once and no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from chaos.drive import (
    Followed,
    answer,
    client_for,
    eventually,
    follow,
    log_faults,
    start_runs,
    text_after_last_restart,
)
from chaos.scenario import Context, Result, scenario
from chaos.stack import SERVICES, ProcessStack, StackOptions, expected_text, health_status, process_stack
from steward.client import AsyncClient, StewardAPIError, StewardClientError

GRACE, PAUSE = 3.0, 0.5
PIECES, CHUNK_DELAY = 60, 0.05


@dataclass
class Probe:
    """What a client calling the API saw while a service drained."""

    calls: int = 0
    server_errors: list[str] = field(default_factory=list)
    unreachable: int = 0  # no answer at all (the gateway itself restarting)


@dataclass
class Readiness:
    """When the watcher first saw the service not ready, and first saw nothing answer (time.monotonic())."""

    not_ready: float | None = None
    gone: float | None = None


async def _probe(client: AsyncClient, runs: list[Followed], probe: Probe, stop: asyncio.Event) -> None:
    index = 0
    while not stop.is_set():
        run = runs[index % len(runs)]
        index += 1
        probe.calls += 1
        try:
            await client.runs.get(run.run_id)
            await client.conversations.page(page_size=5)
        except StewardAPIError as error:
            if error.status >= 500:
                probe.server_errors.append(f"{error.status} {error.reason}")
        except StewardClientError:
            probe.unreachable += 1
        await asyncio.sleep(0.05)


async def _watch(stack: ProcessStack, service: str, seen: Readiness, stop: asyncio.Event) -> None:
    while not stop.is_set() and seen.gone is None:
        if service == "gateway":
            status = await _readyz(stack)
            ready, answered = status == 200, status is not None
        else:
            health = await health_status(stack.addresses[service], deadline=0.5)
            ready, answered = health == 1, health is not None  # 1: SERVING
        now = time.monotonic()
        if answered and not ready and seen.not_ready is None:
            seen.not_ready = now
        if not answered:
            seen.gone = now
        await asyncio.sleep(0.02)


async def _readyz(stack: ProcessStack) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=0.5) as http:
            return (await http.get(f"{stack.url}/readyz")).status_code
    except httpx.HTTPError:
        return None


async def _drain_one(stack: ProcessStack, client: AsyncClient, result: Result, service: str, count: int) -> None:
    runs = await start_runs(client, count)
    follow(client, runs)
    streaming = await eventually(lambda: all(run.count("text_delta") > 0 for run in runs), 30)
    result.expect(streaming, f"{service}: not every run was streaming within 30 s")
    probe, seen, stop = Probe(), Readiness(), asyncio.Event()
    tasks = [
        asyncio.create_task(_probe(client, runs, probe, stop)),
        asyncio.create_task(_watch(stack, service, seen, stop)),
    ]
    await asyncio.sleep(0.3)
    try:
        code, took = await stack.terminate(service)
        await stack.start(service)
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), 90)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
    result.figure(f"{service}_exit_s", took)
    result.figure(f"{service}_calls", probe.calls)
    result.figure(f"{service}_5xx", len(probe.server_errors))
    result.expect(code == 0, f"{service} exited with {code}")
    result.expect(took <= GRACE + 2.0, f"{service} took {took:.1f} s to exit (grace {GRACE} s + 2 s)")
    result.expect(not probe.server_errors, f"{service}: the prober saw {probe.server_errors[:3]}")
    if service == "gateway":
        result.figure("gateway_unreachable_calls", probe.unreachable)
    else:
        result.expect(probe.unreachable == 0, f"{service}: {probe.unreachable} calls got no answer at all")
    said = seen.not_ready is not None and (seen.gone is None or seen.not_ready < seen.gone)
    result.expect(said, f"{service} stopped answering before it said it was not ready")
    result.expect(ended, f"{service}: some runs had not ended 90 s after the restart")
    expected, wrong, gaps = expected_text(PIECES), 0, 0
    for run in runs:
        gaps += log_faults([event.seq for event in run.events])[0]
        if (
            run.end_type != "run_completed"
            or text_after_last_restart(run.events) != expected
            or await answer(client, run.conversation_id) != [expected]
        ):
            wrong += 1
    result.expect(gaps == 0, f"{service}: clients saw {gaps} gaps")
    result.expect(wrong == 0, f"{service}: {wrong} of {len(runs)} runs did not complete with the answer once")


@scenario("F6", "SIGTERM each service in turn under load: it drains, exits in time, and comes back unnoticed")
async def drain_each(context: Context, result: Result) -> None:
    common = {"shutdown_grace": GRACE, "drain_pause": PAUSE}
    options = StackOptions(database_url=context.database_url, pieces=PIECES, chunk_delay=CHUNK_DELAY, common=common)
    async with process_stack(context.data_dir, options) as stack, client_for(stack) as client:
        for service in SERVICES:
            await _drain_one(stack, client, result, service, max(2, context.scale.runs // 2))
