"""Scenario L2, the reconnect storm: many runs' SSE streams dropped at random moments and resumed with
`Last-Event-ID`, checked for gaps and duplicates, and timed from each reconnect to its first event.

`reconnect_storm` drives a running gateway over HTTP only (docs/http-api.md): it creates an agent on a model route
whose answers last longer than the storm (`storm_upstream`: a fake upstream sending a text piece every
`EVENT_INTERVAL` seconds), starts `streams` runs, each in its own conversation, and follows each run's
`GET /api/v1/runs/{id}/events`. Every connection lives a random time drawn from `drop_every` (seconds), then its TCP
connection is closed mid-stream; the client stays away a random time drawn from `offline` (so that the run has moved
on and a backlog waits: the resume reads the log, not only the live tail) and reconnects with `Last-Event-ID` set to
the last event it read whole. After `duration` seconds the drops stop, the runs are cancelled, and every stream is
read to its run's last event (`run_cancelled`).

An event's SSE `id` is its seq in the run's log, 1, 2, 3, ... with no holes, so a stream is right when the ids it
reads are exactly 1..n, ending with the run's last event: a skipped id is a gap, an id at or below the last one read a
duplicate. A resume is "from the cursor" when its first event is the one just after `Last-Event-ID` (a replay from
0 would start at 1). A resume's latency is from the start of the reconnect (a new TCP connection, as a browser's
EventSource makes) to its first whole event.

`python -m chaos.storm` runs the full scenario against a real-process stack (bench.gateway_stack: store, provider,
confirm, runtime and gateway as processes, the fake upstream in its own) and prints its figures and the processes'
CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.gateway_stack import Upstream, gateway_stack
from bench.store import percentile

ROUTE = "storm"  # the model route (and fake upstream) storm runs use
EVENT_INTERVAL = 0.2  # seconds between a storm run's text pieces (each one event in the log)
OFFLINE = (0.25, 1.0)  # seconds a dropped client stays away before it reconnects
TARGET_P99 = 0.5  # seconds from a reconnect to its first event
FIRST_EVENT_TIMEOUT = 30.0  # a connection with no event for this long counts as stalled and is dropped
END_TIMEOUT = 60.0  # seconds every stream gets to read its run's end after the cancels
CREATE_CONCURRENCY = 8
TERMINAL = frozenset({"run_completed", "run_failed", "run_cancelled", "run_incomplete", "run_expired"})


@dataclass(frozen=True)
class StormResult:
    """What a storm saw: counts over all streams, and every resume's latency (seconds)."""

    streams: int
    events: int
    resumes: int
    gaps: int  # event ids skipped
    duplicates: int  # events read again
    off_cursor: int  # resumes whose first event was not the one after Last-Event-ID
    unfinished: int  # streams that never read their run's last event
    errors: int  # non-200 answers, `error` events and stalled connections (each retried)
    latencies: tuple[float, ...] = field(repr=False)
    seconds: float = 0.0

    @property
    def p50(self) -> float:
        return percentile(list(self.latencies), 50) if self.latencies else 0.0

    @property
    def p99(self) -> float:
        return percentile(list(self.latencies), 99) if self.latencies else 0.0

    @property
    def max(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def passed(self) -> bool:
        """No gap, no duplicate, every resume from its cursor, every stream to its end, p99 within the target."""
        clean = not (self.gaps or self.duplicates or self.off_cursor or self.unfinished)
        return clean and bool(self.latencies) and self.p99 <= TARGET_P99

    def summary(self) -> str:
        return (
            f"{self.streams} streams, {self.events} events, {self.resumes} resumes in {self.seconds:.0f} s: "
            f"gaps {self.gaps}, duplicates {self.duplicates}, off the cursor {self.off_cursor}, "
            f"unfinished {self.unfinished}, errors {self.errors}; resume -> first event p50 {self.p50 * 1000:.0f} ms "
            f"p99 {self.p99 * 1000:.0f} ms max {self.max * 1000:.0f} ms "
            f"(target p99 <= {TARGET_P99 * 1000:.0f} ms) {'passed' if self.passed else 'FAILED'}"
        )


@dataclass
class _Stream:
    """One run's stream as its client saw it, across its connections."""

    run_id: str
    last: int = 0  # the last event id read whole: the cursor
    events: int = 0
    gaps: int = 0
    duplicates: int = 0
    resumes: int = 0
    off_cursor: int = 0
    errors: int = 0
    ended: bool = False
    latencies: list[float] = field(default_factory=list)

    def see(self, event_id: int) -> None:
        if event_id <= self.last:
            self.duplicates += 1
            return
        self.gaps += event_id - self.last - 1
        self.last = event_id
        self.events += 1


def storm_upstream(duration: float, interval: float = EVENT_INTERVAL) -> Upstream:
    """The fake upstream for `ROUTE`: every answer a text piece each `interval` seconds, lasting well past
    `duration` (the storm cancels its runs)."""
    return Upstream(ROUTE, pieces=int((duration + 300) / interval), chunk_delay=interval)


async def _post(session: aiohttp.ClientSession, url: str, body: Mapping[str, object]) -> dict[str, object]:
    async with session.post(url, json=body) as response:
        if response.status not in (200, 201, 202):
            raise RuntimeError(f"POST {url}: {response.status} {await response.text()}")
        answer: dict[str, object] = await response.json()
        return answer


async def _start_runs(session: aiohttp.ClientSession, url: str, route: str, count: int, duration: float) -> list[str]:
    agent = {"name": "storm", "system_prompt": "You talk on.", "model_route": route, "tools": []}
    agent_id = (await _post(session, f"{url}/api/v1/agents", agent))["id"]
    limits = {"timeout_seconds": duration + 600, "first_token_timeout_seconds": 120}
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def start(index: int) -> str:
        async with gate:
            conversation = await _post(session, f"{url}/api/v1/conversations", {"title": f"storm {index}"})
            body = {"conversation_id": conversation["id"], "agent_id": agent_id, "content": "Talk.", "limits": limits}
            run = (await _post(session, f"{url}/api/v1/runs", body))["run"]
            assert isinstance(run, dict)
            return str(run["id"])

    return list(await asyncio.gather(*(start(index) for index in range(count))))


async def _connection(
    session: aiohttp.ClientSession, url: str, stream: _Stream, lifetime: float, stop: asyncio.Event
) -> bool:
    """One connection: its events until the run's end; unless `stop` is set by then, its TCP connection is closed
    `lifetime` seconds after it began (or at its first event, if that came later). True when it was dropped so."""
    loop = asyncio.get_running_loop()
    cursor = stream.last
    headers = {"Last-Event-ID": str(cursor)} if cursor else {}
    started = loop.time()
    first = True
    dropped = False
    drop_timer: asyncio.TimerHandle | None = None
    event_id: int | None = None
    kind = b""
    async with session.get(url, headers=headers) as response:
        if response.status != 200:
            stream.errors += 1
            await response.read()
            return False

        def drop() -> None:
            nonlocal dropped
            if not stop.is_set():
                dropped = True
                response.close()  # closes the TCP connection (the session never reuses one: force_close)

        try:
            async with asyncio.timeout(FIRST_EVENT_TIMEOUT) as no_event:
                async for raw in response.content:
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"id:"):
                        event_id = int(line[3:])
                    elif line.startswith(b"event:"):
                        kind = line[6:].strip()
                    elif line:
                        continue  # data, retry, a ping comment
                    elif event_id is None:
                        stream.errors += kind == b"error"
                        kind = b""
                    else:
                        if first:
                            first = False
                            if cursor:
                                stream.latencies.append(loop.time() - started)
                                stream.resumes += 1
                                stream.off_cursor += event_id != cursor + 1
                            no_event.reschedule(None)
                            drop_timer = loop.call_at(max(loop.time(), started + lifetime), drop)
                        stream.see(event_id)
                        if kind.decode() in TERMINAL:
                            stream.ended = True
                            return False
                        event_id, kind = None, b""
        except TimeoutError:
            stream.errors += 1  # stalled: no event in FIRST_EVENT_TIMEOUT
        except aiohttp.ClientError:
            stream.errors += not dropped
        finally:
            if drop_timer is not None:
                drop_timer.cancel()
            response.close()
    return dropped


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    stream: _Stream,
    rng: random.Random,
    drop_every: tuple[float, float],
    offline: tuple[float, float],
    stop: asyncio.Event,
) -> None:
    """Follow the run's stream to its end, dropping it every `drop_every` seconds until `stop` is set."""
    events_url = f"{url}/api/v1/runs/{stream.run_id}/events"
    while not stream.ended:
        dropped = await _connection(session, events_url, stream, rng.uniform(*drop_every), stop)
        if not stream.ended:
            await asyncio.sleep(rng.uniform(*offline) if dropped else 0.5)


async def reconnect_storm(
    url: str,
    token: str,
    *,
    streams: int,
    duration: float,
    drop_every: tuple[float, float],
    seed: int,
    offline: tuple[float, float] = OFFLINE,
    route: str = ROUTE,
) -> StormResult:
    """Start `streams` runs on `route` (answers lasting past `duration`: `storm_upstream`), follow each run's event
    stream, dropping its connection every `drop_every` seconds and resuming after `offline` seconds, for `duration`
    seconds; then cancel the runs and read every stream to its end. Seeded: the same seed draws the same drops."""
    # The client's own full collections (over its thousands of connections' objects) took up to 360 ms: time
    # the resumes in flight would be charged for. It collects again once the storm is over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return await _storm(url, token, streams, duration, drop_every, seed, offline, route)
    finally:
        if collecting:
            gc.enable()


async def _storm(
    url: str,
    token: str,
    streams: int,
    duration: float,
    drop_every: tuple[float, float],
    seed: int,
    offline: tuple[float, float],
    route: str,
) -> StormResult:
    rng = random.Random(seed)  # noqa: S311 - a seeded schedule, not a secret
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
        run_ids = await _start_runs(session, url, route, streams, duration)
        states = [_Stream(run_id) for run_id in run_ids]
        stop = asyncio.Event()
        started = time.perf_counter()
        rngs = [random.Random(rng.random()) for _ in states]  # noqa: S311 - one schedule per stream
        followers = [
            asyncio.create_task(_follow(session, url, state, own, drop_every, offline, stop))
            for state, own in zip(states, rngs, strict=True)
        ]
        try:
            await asyncio.sleep(duration)
            stop.set()
            gate = asyncio.Semaphore(CREATE_CONCURRENCY)

            async def cancel(run_id: str) -> None:
                async with gate:
                    await _post(session, f"{url}/api/v1/runs/{run_id}/cancel", {})

            await asyncio.gather(*(cancel(run_id) for run_id in run_ids))
            await asyncio.wait(followers, timeout=END_TIMEOUT)
        finally:
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        seconds = time.perf_counter() - started
    return StormResult(
        streams=streams,
        events=sum(s.events for s in states),
        resumes=sum(s.resumes for s in states),
        gaps=sum(s.gaps for s in states),
        duplicates=sum(s.duplicates for s in states),
        off_cursor=sum(s.off_cursor for s in states),
        unfinished=sum(not s.ended for s in states),
        errors=sum(s.errors for s in states),
        latencies=tuple(latency for s in states for latency in s.latencies),
        seconds=seconds,
    )


@contextlib.contextmanager
def storm_settings(**values: object) -> Iterator[None]:
    """STEWARD_* settings for the processes a stack starts meanwhile (every process reads only its own)."""
    names = {f"STEWARD_{name.upper()}": str(value) for name, value in values.items()}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _children_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's children, by `-m` module name."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdecimal():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) != os.getpid() or b"-m" not in args:
            continue
        name = args[args.index(b"-m") + 1].decode().removeprefix("services.")
        found[name] = found.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / ticks
    return found


async def _api_token(url: str, dev_token: str) -> str:
    """An API token (verified by the store, cached by the gateway), as a client would hold."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev_token}"}) as session:
        return str((await _post(session, f"{url}/api/v1/tokens", {"label": "storm"}))["token"])


async def main(argv: list[str] | None = None) -> StormResult:
    parser = argparse.ArgumentParser(prog="python -m chaos.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--drop-every", type=float, nargs=2, default=(1.0, 5.0), metavar=("MIN", "MAX"))
    parser.add_argument("--offline", type=float, nargs=2, default=OFFLINE, metavar=("MIN", "MAX"))
    parser.add_argument("--interval", type=float, default=EVENT_INTERVAL, help="seconds between a run's events")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as data_dir, storm_settings(max_active_runs=args.streams + 16):
        async with gateway_stack(Path(data_dir), [storm_upstream(args.duration, args.interval)]) as stack:
            token = await _api_token(stack.url, stack.dev_token)
            before, cpu_started = _children_cpu(), time.perf_counter()
            result = await reconnect_storm(
                stack.url,
                token,
                streams=args.streams,
                duration=args.duration,
                drop_every=(args.drop_every[0], args.drop_every[1]),
                seed=args.seed,
                offline=(args.offline[0], args.offline[1]),
            )
            after, wall = _children_cpu(), time.perf_counter() - cpu_started
    print(f"[storm] {result.summary()}")
    cpu = {name: (after[name] - before.get(name, 0.0)) / wall for name in sorted(after)}
    print("[storm] CPU (cores): " + ", ".join(f"{name} {share:.2f}" for name, share in cpu.items()))
    return result


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()).passed else 1)
