"""F1, F2, F3, F5: one process killed (or stopped with SIGTERM) under streaming runs and started again.

Every run streams the fake upstream's answer (60 pieces, 50 ms apart: three seconds) and is followed by a client
that resumes by itself. The process goes away while every run is streaming, stays away for the scale's outage, and
comes back. Pass: every run completes; its answer is stored exactly once and equals the upstream's; the client saw
its events 1, 2, 3, ... with no gap, and so does the stored log (the store keeps one event per sequence number, and
the client drops a replayed one; a step's text written twice would show in the answer); and every run's next event
arrived within the bound after the process was back.
"""

from __future__ import annotations

import asyncio
import signal
import time

from chaos.checks import integrity, next_event_after, record_integrity
from chaos.drive import Followed, client_for, eventually, follow, start_runs
from chaos.scenario import Context, Result, scenario
from chaos.stack import ProcessStack, StackOptions, expected_text, process_stack
from steward.client import AsyncClient

PIECES, CHUNK_DELAY = 60, 0.05
# After the process is back: the bound on every run's next event (the acceptance figures).
NEXT_EVENT_BOUND = {"store": 10.0, "provider": 10.0, "runtime": 10.0, "gateway": 10.0}
GRACEFUL_RUNTIME_BOUND = 3.0


async def restart_under_load(context: Context, result: Result, service: str, sig: signal.Signals) -> None:
    # A grace shorter than the answers, so that a drain cuts streams off and the runtime must carry them over.
    common = {"shutdown_grace": 1.0} if sig == signal.SIGTERM else {}
    options = StackOptions(database_url=context.database_url, pieces=PIECES, chunk_delay=CHUNK_DELAY, common=common)
    data_dir = context.data_dir / f"{result.name}-{service}-{sig.name.lower()}"
    data_dir.mkdir(parents=True)
    async with process_stack(data_dir, options) as stack, client_for(stack) as client:
        runs = await start_runs(client, context.scale.runs)
        follow(client, runs)
        streaming = await eventually(lambda: all(run.count("text_delta") > 0 for run in runs), 30)
        result.expect(streaming, "not every run was streaming within 30 s")
        back = await _outage(stack, result, service, sig, context.scale.outage)
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), 120)
        result.expect(ended, "some runs had not ended 120 s after the restart")
        await _check_runs(client, result, runs, back, service, sig)


async def _outage(stack: ProcessStack, result: Result, service: str, sig: signal.Signals, outage: float) -> float:
    """Take `service` away with `sig`, keep it away `outage` seconds, start it again; when it was back."""
    if sig == signal.SIGKILL:
        await stack.crash(service)
    else:
        code, took = await stack.terminate(service)
        result.figure("exit_code", code)
        result.figure("exit_seconds", took)
        result.expect(code == 0, f"{service} exited with {code} on SIGTERM")
    await asyncio.sleep(outage)
    result.figure("start_seconds", await stack.start(service))
    return time.monotonic()


async def _check_runs(
    client: AsyncClient, result: Result, runs: list[Followed], back: float, service: str, sig: signal.Signals
) -> None:
    found = await integrity(client, runs, expected_text(PIECES))
    record_integrity(result, found)
    # Runs that ended before the process was back (a drained provider finishes its streams) have no next event.
    going, worst = next_event_after(runs, back)
    result.figure("still_going_when_back", going)
    result.figure("next_event_after_back_max_s", worst)
    bound = GRACEFUL_RUNTIME_BOUND if (service == "runtime" and sig == signal.SIGTERM) else NEXT_EVENT_BOUND[service]
    result.expect(worst <= bound, f"a run's next event came {worst:.1f} s after {service} was back (bound {bound} s)")
    if service == "provider" and sig == signal.SIGKILL:
        result.expect(
            found.restarted == len(runs), f"only {found.restarted} of {len(runs)} runs restarted their model step"
        )


@scenario("F1", "kill -9 the runtime under streaming runs, restart it after the outage")
async def runtime_killed(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "runtime", signal.SIGKILL)


@scenario("F1-term", "SIGTERM the runtime under streaming runs, start it again after the outage")
async def runtime_terminated(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "runtime", signal.SIGTERM)


@scenario("F2", "kill -9 the store under streaming runs, restart it after the outage")
async def store_killed(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "store", signal.SIGKILL)


@scenario("F3", "kill -9 the provider mid-stream, restart it after the outage")
async def provider_killed(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "provider", signal.SIGKILL)


@scenario("F3-term", "SIGTERM the provider mid-stream, start it again after the outage")
async def provider_terminated(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "provider", signal.SIGTERM)


@scenario("F5", "kill -9 the gateway under followed runs, restart it after the outage")
async def gateway_killed(context: Context, result: Result) -> None:
    await restart_under_load(context, result, "gateway", signal.SIGKILL)
