"""Gateway benchmarks: a chat completion through the whole stack against the same call made directly upstream.

Both paths make the same streamed request (`stream_options.include_usage`), read by a lean SSE client, against fake
OpenAI-compatible upstreams (`python -m fakes`, each in its own process): directly, or through the gateway's
`/v1/chat/completions`, where the model is an agent routed (by the provider) to the same upstream. Through the
gateway a completion is a whole run: a conversation and a run created, the runtime's claim, the provider's
Generate, every delta written to the store's event log and read back from it by the gateway. Every process runs
as deployed (SQLite, logging at WARNING), the clients in this one; the gateway's rate limits are off (one user
drives the whole load).

- TTFT: from the request to the first chunk with text, p50/p99; "overhead" is the gateway's percentile minus the
  direct one. At concurrency 1 (calls interleaved: drift affects both alike), then 32 and 256 (closed loop: every
  worker starts its next call when its last one ends) for a fixed time per path.
- Runs/s: completions that ended with their whole answer, per second of the closed-loop phase.
- Inter-token gaps: a paced upstream (`PACED.pieces` pieces, `PACED.chunk_delay` apart), at concurrency 1: the
  gaps between text chunks as the client sees them, p50/p95, and how many chunks the answer came in (the runtime
  coalesces text arriving within `text_flush_interval` into one event).

Targets (issue acceptance): TTFT overhead p50 <= 3 ms at c1; >= 200 complete runs/s at c32.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.gateway_stack import GatewayStack, Upstream, gateway_stack
from bench.store import percentile

QUICK = Upstream("quick", pieces=8, chunk_delay=0.0005)
PACED = Upstream("paced", pieces=24, chunk_delay=0.02)
PROMPT = "Say something, please."
WARM_UP = 10
SEQUENTIAL_CALLS = 100
PACED_CALLS = 10
PHASE_SECONDS = 10.0
CONCURRENCY = (32, 256)
TARGET_OVERHEAD_MS = 3.0
TARGET_RUNS_PER_SECOND = 200.0


@dataclass(frozen=True)
class Sample:
    """One streamed completion: seconds to the first text chunk and to its end; when each text chunk arrived."""

    ttft: float
    total: float
    arrivals: tuple[float, ...]


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ttft_ms(self) -> list[float]:
        return [sample.ttft * 1000 for sample in self.samples]

    @property
    def runs_per_second(self) -> float:
        return len(self.samples) / self.elapsed if self.elapsed else 0.0


Call = Callable[[], Awaitable[Sample]]


def completion(session: aiohttp.ClientSession, base_url: str, token: str, model: str, upstream: Upstream) -> Call:
    """A streamed chat completion read by a lean SSE client (the SDK's per-chunk parsing would take a large share
    of this machine's two cores from the servers under test; the SDK itself is covered by the tests)."""
    expected = "".join(f"tok{index} " for index in range(upstream.pieces))
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = f"{base_url}/chat/completions"

    async def call() -> Sample:
        started = time.perf_counter()
        arrivals: list[float] = []
        text: list[str] = []
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"{model}: {response.status} {await response.text()}")
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    arrivals.append(time.perf_counter())
                    text.append(choices[0]["delta"]["content"])
        if "".join(text) != expected:
            raise RuntimeError(f"{model}: expected {expected!r}, got {''.join(text)!r}")
        return Sample(arrivals[0] - started, time.perf_counter() - started, tuple(arrivals))

    return call


async def sequential(calls: list[Call], count: int) -> list[Measured]:
    """`count` calls of each, interleaved."""
    results = [Measured() for _ in calls]
    for _ in range(count):
        for call, measured in zip(calls, results, strict=True):
            sample = await call()
            measured.samples.append(sample)
            measured.elapsed += sample.total
    return results


async def closed_loop(call: Call, concurrency: int, seconds: float) -> Measured:
    """`concurrency` workers calling back to back for `seconds` (calls begun by then are waited for, not counted
    as begun late: elapsed runs to the last one's end)."""
    measured, deadline = Measured(), time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            measured.samples.append(await call())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    measured.elapsed = time.perf_counter() - started
    return measured


def _ttft(label: str, direct: Measured, gateway: Measured) -> tuple[float, str]:
    d, g = direct.ttft_ms, gateway.ttft_ms
    d50, d99, g50, g99 = percentile(d, 50), percentile(d, 99), percentile(g, 50), percentile(g, 99)
    line = (
        f"[gateway {label}] TTFT direct p50 {d50:.2f} ms p99 {d99:.2f} ms; gateway p50 {g50:.2f} ms "
        f"p99 {g99:.2f} ms; overhead p50 {g50 - d50:.2f} ms p99 {g99 - d99:.2f} ms"
    )
    return g50 - d50, line


async def concurrency_1(direct: Call, gateway: Call) -> None:
    await sequential([direct, gateway], WARM_UP)
    measured = await sequential([direct, gateway], SEQUENTIAL_CALLS)
    overhead, line = _ttft("c1", *measured)
    met = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"{line} (target: <= {TARGET_OVERHEAD_MS:g} ms p50) {met}")


async def concurrent(direct: Call, gateway: Call, concurrency: int) -> None:
    await asyncio.gather(*(call() for call in (direct, gateway) for _ in range(concurrency)))  # connections
    measured = [await closed_loop(call, concurrency, PHASE_SECONDS) for call in (direct, gateway)]
    _, line = _ttft(f"c{concurrency}", *measured)
    runs = measured[1].runs_per_second
    target = ""
    if concurrency == 32:
        met = "met" if runs >= TARGET_RUNS_PER_SECOND else "MISSED"
        target = f" (target: >= {TARGET_RUNS_PER_SECOND:g} runs/s) {met}"
    print(f"{line}; runs/s direct {measured[0].runs_per_second:.0f}, gateway {runs:.0f}{target}")


def _gaps_ms(measured: Measured) -> list[float]:
    return [(b - a) * 1000 for s in measured.samples for a, b in zip(s.arrivals, s.arrivals[1:], strict=False)]


async def paced_gaps(direct: Call, gateway: Call) -> None:
    measured = await sequential([direct, gateway], PACED_CALLS)
    parts = []
    for label, one in zip(("direct", "gateway"), measured, strict=True):
        gaps, chunks = _gaps_ms(one), sum(len(s.arrivals) for s in one.samples) / len(one.samples)
        parts.append(
            f"{label} p50 {percentile(gaps, 50):.1f} ms p95 {percentile(gaps, 95):.1f} ms, {chunks:.1f} chunks/answer"
        )
    print(
        f"[gateway gaps] inter-chunk gaps ({PACED.pieces} pieces {PACED.chunk_delay * 1000:g} ms apart): "
        + "; ".join(parts)
    )


async def _agent(session: aiohttp.ClientSession, stack: GatewayStack, upstream: Upstream) -> None:
    body = {"name": upstream.name, "system_prompt": "You answer.", "model_route": upstream.name, "tools": []}
    async with session.post(f"{stack.url}/api/v1/agents", json=body) as response:
        if response.status != 201:
            raise RuntimeError(f"creating agent {upstream.name}: {response.status} {await response.text()}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with gateway_stack(Path(data_dir), [QUICK, PACED]) as stack:
            headers = {"Authorization": f"Bearer {stack.dev_token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                for upstream in (QUICK, PACED):
                    await _agent(session, stack, upstream)
            await _measure(stack)


async def _measure(stack: GatewayStack) -> None:
    through, direct = f"{stack.url}/v1", {name: f"{root}/v1" for name, root in stack.roots.items()}
    print(
        f"Gateway benchmarks ({QUICK.pieces} pieces {QUICK.chunk_delay * 1000:g} ms apart; every process as deployed, "
        f"SQLite; {os.cpu_count()} cores; {SEQUENTIAL_CALLS} calls at c1, {PHASE_SECONDS:g} s per path at "
        f"{', '.join(f'c{c}' for c in CONCURRENCY)})"
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        token = stack.dev_token
        quick = (
            completion(session, direct[QUICK.name], "unused", "fake-model", QUICK),
            completion(session, through, token, QUICK.name, QUICK),
        )
        await concurrency_1(*quick)
        for concurrency in CONCURRENCY:
            await concurrent(*quick, concurrency)
        await paced_gaps(
            completion(session, direct[PACED.name], "unused", "fake-model", PACED),
            completion(session, through, token, PACED.name, PACED),
        )
