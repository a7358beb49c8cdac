"""F6: SIGTERM to each service in turn, under streaming runs and a client making calls, and the service started again.

One stack; for each of store, provider, confirm, runtime and gateway: runs start streaming, a prober reads through
the HTTP API every 50 ms, a watcher polls the service's readiness (gRPC health, or the gateway's /readyz), and the
service gets SIGTERM (grace 3 s, drain pause 0.5 s). Pass: the service says it is not ready at once (within the
pause) and keeps answering through its pause before it stops; it exits 0 within grace + 2 s; no call the prober
made answered 5xx (a call to a service that is restarting waits for it), nor did the gateway answer any other (the
followers' reconnects, which the client retries unseen); every run completes with its answer exactly once and no
gap. What the drain of one service needs checked beyond this is in tests/test_drain.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from chaos.checks import integrity, record_integrity
from chaos.drive import (
    Followed,
    client_for,
    eventually,
    follow,
    start_runs,
)
from chaos.scenario import Context, Result, scenario
from chaos.stack import SERVICES, ProcessStack, StackOptions, expected_text, process_stack
from chaos.watch import watch_readiness
from steward.client import AsyncClient, StewardAPIError, StewardClientError

GRACE, PAUSE = 3.0, 0.5
PIECES, CHUNK_DELAY = 60, 0.05


@dataclass
class Probe:
    """What a client calling the API saw while a service drained."""

    calls: int = 0
    server_errors: list[str] = field(default_factory=list)
    unreachable: int = 0  # no answer at all (the gateway itself restarting)


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


async def _drain_one(stack: ProcessStack, client: AsyncClient, result: Result, service: str, count: int) -> None:
    runs = await start_runs(client, count)
    follow(client, runs)
    streaming = await eventually(lambda: all(run.count("text_delta") > 0 for run in runs), 30)
    result.expect(streaming, f"{service}: not every run was streaming within 30 s")
    probe, stop, logged = Probe(), asyncio.Event(), stack.log_size("gateway")
    prober = asyncio.create_task(_probe(client, runs, probe, stop))
    try:
        async with watch_readiness(stack, service) as seen:
            await asyncio.sleep(0.3)
            sent = time.monotonic()
            code, took = await stack.terminate(service)
            await stack.start(service)
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), 90)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await prober
    refused = _api_server_errors(stack, logged)
    result.figure(f"{service}_exit_s", took)
    result.figure(f"{service}_not_ready_s", -1.0 if seen.not_ready is None else seen.not_ready - sent)
    result.figure(f"{service}_pause_s", seen.answered_not_ready or 0.0)
    result.figure(f"{service}_calls", probe.calls)
    result.figure(f"{service}_5xx", len(probe.server_errors))
    result.expect(code == 0, f"{service} exited with {code}")
    result.expect(took <= GRACE + 2.0, f"{service} took {took:.1f} s to exit (grace {GRACE} s + 2 s)")
    result.expect(not probe.server_errors, f"{service}: the prober saw {probe.server_errors[:3]}")
    result.expect(not refused, f"{service}: the gateway answered {refused[:3]}")
    if service == "gateway":
        result.figure("gateway_unreachable_calls", probe.unreachable)
    else:
        result.expect(probe.unreachable == 0, f"{service}: {probe.unreachable} calls got no answer at all")
    result.expect(seen.said_first, f"{service} stopped answering before it said it was not ready")
    at_once = seen.not_ready is not None and seen.not_ready - sent < PAUSE
    result.expect(at_once, f"{service} did not say it was not ready within {PAUSE} s of SIGTERM")
    paused = (seen.answered_not_ready or 0.0) >= PAUSE * 0.8
    result.expect(paused, f"{service} did not keep answering through its {PAUSE} s pause")
    result.expect(ended, f"{service}: some runs had not ended 90 s after the restart")
    await _check_answers(client, result, service, runs)


def _api_server_errors(stack: ProcessStack, since: int) -> list[str]:
    """Every API request the gateway answered 5xx (its access log from byte `since`); /readyz is the watcher's."""
    requests = [entry for entry in stack.log_entries("gateway", since) if entry.get("event") == "http_request"]
    return [
        f"{entry['status']} {entry['method']} {entry['path']}"
        for entry in requests
        if str(entry["path"]).startswith("/api/") and int(str(entry["status"])) >= 500
    ]


async def _check_answers(client: AsyncClient, result: Result, service: str, runs: list[Followed]) -> None:
    record_integrity(result, await integrity(client, runs, expected_text(PIECES)), prefix=f"{service}_")


@scenario("F6", "SIGTERM each service in turn under load: it drains, exits in time, and comes back unnoticed")
async def drain_each(context: Context, result: Result) -> None:
    common = {"shutdown_grace": GRACE, "drain_pause": PAUSE}
    options = StackOptions(database_url=context.database_url, pieces=PIECES, chunk_delay=CHUNK_DELAY, common=common)
    async with process_stack(context.data_dir, options) as stack, client_for(stack) as client:
        for service in SERVICES:
            await _drain_one(stack, client, result, service, max(2, context.scale.runs // 2))
