"""Provider proxy overhead: the provider's gRPC Generate against calling the same (fake) upstream directly with the
official SDK, for both protocols (openai, anthropic), at concurrency 1 and 32.

Both paths stream the same scripted reply (64 text pieces, 2 ms apart) from the fake upstream, which runs in its own
process as a real one would (`python -m fakes`):

- TTFT: from the start of the request to the first text delta (direct) or `text_delta` event (proxy), p50/p99;
  "added" is the proxy's percentile minus the direct one.
- tokens/s: the answer's text pieces (64 per call, whatever the number of messages they arrived in: the provider
  merges deltas that pile up while its reader is behind) over the time from the start of the request to the end
  of the stream, aggregated across
  the calls (sequential at concurrency 1, concurrent streams per round at 32); reported as the proxy/direct ratio.

The provider runs in its own process (SQLite, a user key put first, no budget set) and its client calls it over a
real gRPC channel, as the runtime does. The direct and proxy calls are interleaved, so drift affects both alike.

Targets (issue acceptance): <= 1 ms TTFT added at p50, >= 0.8x the direct tokens/s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import grpc
import openai
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.store import percentile
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc
from tests.provider.harness import ANTHROPIC_MODEL, OPENAI_MODEL, ask
from tests.support.grpc_helpers import principal_metadata

PIECES = 64
CHUNK_DELAY = 0.002  # seconds between streamed chunks: realistic inter-token gaps
PROMPT = "Say something, please."
MAX_TOKENS = 1024
WARM_UP = 5
SEQUENTIAL_CALLS = 50
CONCURRENCY = 32
ROUNDS = 5
TARGET_ADDED_MS = 1.0
TARGET_RATIO = 0.8

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One streamed call: seconds to the first text delta, to the end of the stream, and the answer's text pieces."""

    ttft: float
    total: float
    pieces: int


Call = Callable[[], Awaitable[Sample]]


@dataclass
class Measured:
    """The samples of one path; `elapsed` is the wall time the aggregate tokens/s is taken over."""

    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ttft_ms(self) -> list[float]:
        return [sample.ttft * 1000 for sample in self.samples]

    @property
    def tokens_per_second(self) -> float:
        return sum(sample.pieces for sample in self.samples) / self.elapsed


EXPECTED_TEXT = "".join(f"tok{index} " for index in range(PIECES))  # what the fake upstream answers


def _finished(started: float, first: float | None, text: list[str]) -> Sample:
    if first is None or "".join(text) != EXPECTED_TEXT:
        raise RuntimeError(f"expected the {PIECES}-piece answer, got {''.join(text)!r}")
    return Sample(first - started, time.perf_counter() - started, PIECES)


def direct_openai(client: openai.AsyncOpenAI, model: str) -> Call:
    async def call() -> Sample:
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        chunks = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=MAX_TOKENS,
        )
        async with chunks:
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    text.append(chunk.choices[0].delta.content)
        return _finished(started, first, text)

    return call


def direct_anthropic(client: anthropic.AsyncAnthropic, model: str) -> Call:
    async def call() -> Sample:
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        events = await client.messages.create(
            model=model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        async with events:
            async for event in events:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    first = first or time.perf_counter()
                    text.append(event.delta.text)
        return _finished(started, first, text)

    return call


async def sequential(direct: Call, proxy: Call) -> tuple[Measured, Measured]:
    for _ in range(WARM_UP):
        await direct()
        await proxy()
    results = Measured(), Measured()
    for _ in range(SEQUENTIAL_CALLS):
        for call, measured in zip((direct, proxy), results, strict=True):
            sample = await call()
            measured.samples.append(sample)
            measured.elapsed += sample.total
    return results


async def concurrent(direct: Call, proxy: Call) -> tuple[Measured, Measured]:
    for call in (direct, proxy):  # a warm-up round: connections for every concurrent stream
        await asyncio.gather(*(call() for _ in range(CONCURRENCY)))
    results = Measured(), Measured()
    for _ in range(ROUNDS):
        for call, measured in zip((direct, proxy), results, strict=True):
            started = time.perf_counter()
            measured.samples += await asyncio.gather(*(call() for _ in range(CONCURRENCY)))
            measured.elapsed += time.perf_counter() - started
    return results


def report(label: str, direct: Measured, proxy: Measured) -> None:
    d_ms, p_ms = direct.ttft_ms, proxy.ttft_ms
    d50, d99, p50, p99 = percentile(d_ms, 50), percentile(d_ms, 99), percentile(p_ms, 50), percentile(p_ms, 99)
    ratio = proxy.tokens_per_second / direct.tokens_per_second
    met = p50 - d50 <= TARGET_ADDED_MS and ratio >= TARGET_RATIO
    print(
        f"[provider {label}] TTFT direct p50 {d50:.2f} ms p99 {d99:.2f} ms; proxy p50 {p50:.2f} ms p99 {p99:.2f} ms; "
        f"added p50 {p50 - d50:.2f} ms p99 {p99 - d99:.2f} ms; tokens/s ratio {ratio:.2f} "
        f"({proxy.tokens_per_second:.0f} / {direct.tokens_per_second:.0f}) "
        f"(target: <= {TARGET_ADDED_MS:g} ms added at p50, >= {TARGET_RATIO:g}x) {'met' if met else 'MISSED'}"
    )


async def bench_protocol(name: str, direct: Call, proxy: Call) -> None:
    report(f"{name} c1", *await sequential(direct, proxy))
    report(f"{name} c{CONCURRENCY}", *await concurrent(direct, proxy))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def upstream_process(pieces: int = PIECES, chunk_delay: float = CHUNK_DELAY) -> AsyncIterator[str]:
    """The fake upstream in its own process, answering every call with `pieces` text pieces `chunk_delay` seconds
    apart; yields its root URL."""
    port = _free_port()
    args = ["-m", "fakes", "--port", str(port), "--chunk-delay", str(chunk_delay), "--pieces", str(pieces)]
    process = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line.startswith(b"fake upstream on "):
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        yield line.decode().removeprefix("fake upstream on ").strip()
    finally:
        process.terminate()
        await process.wait()


@asynccontextmanager
async def provider_process(root: str, data_dir: Path) -> AsyncIterator[tuple[Any, str]]:
    """The provider as its own process (as deployed), routed to the fake upstream at `root`; yields (stub, secret)."""
    routes = {
        "upstreams": {
            "fake-anthropic": {"protocol": "anthropic", "base_url": root},
            "fake-openai": {"protocol": "openai", "base_url": root + "/v1"},
        }
    }
    (data_dir / "routes.json").write_text(json.dumps(routes))
    port = _free_port()
    secret = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "STEWARD_INTERNAL_SECRET": secret,
        "STEWARD_PROVIDER_ADDRESS": f"127.0.0.1:{port}",
        "STEWARD_DATA_DIR": str(data_dir),
        "STEWARD_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "STEWARD_ROUTES_FILE": str(data_dir / "routes.json"),
        "STEWARD_FIRST_TOKEN_TIMEOUT": "60",
        "STEWARD_IDLE_TIMEOUT": "60",
        "STEWARD_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.provider", env=env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == 1:
                    break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        yield pb_grpc.ProviderServiceStub(channel), secret
    finally:
        await channel.close()
        process.terminate()
        await process.wait()


def proxied_stub(stub: Any, user: Metadata, model: str) -> Call:
    async def call() -> Sample:
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        async for event in stub.Generate(ask(PROMPT, model=model, max_tokens=MAX_TOKENS), metadata=user):
            if event.WhichOneof("event") == "text_delta":
                first = first or time.perf_counter()
                text.append(event.text_delta.text)
        return _finished(started, first, text)

    return call


async def main() -> None:
    async with upstream_process() as root:
        await _main(root)


async def _main(root: str) -> None:
    key = f"sk-bench-{secrets.token_hex(12)}"
    openai_client = openai.AsyncOpenAI(api_key=key, base_url=root + "/v1", max_retries=0)
    anthropic_client = anthropic.AsyncAnthropic(api_key=key, base_url=root, max_retries=0)
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            async with provider_process(root, Path(data_dir)) as (stub, secret):
                user = principal_metadata(secret, "bench-user")
                for upstream in ("fake-openai", "fake-anthropic"):
                    await stub.PutKey(pb.PutKeyRequest(provider=upstream, secret=key, label="bench"), metadata=user)
                print(
                    f"Provider proxy overhead ({PIECES} pieces, {CHUNK_DELAY * 1000:g} ms apart; the fake upstream and "
                    f"the provider (SQLite) each in its own process, the clients in this one; {SEQUENTIAL_CALLS} calls "
                    f"at c1, {ROUNDS} rounds at c{CONCURRENCY})"
                )
                await bench_protocol(
                    "openai",
                    direct_openai(openai_client, OPENAI_MODEL.split("/", 1)[1]),
                    proxied_stub(stub, user, OPENAI_MODEL),
                )
                await bench_protocol(
                    "anthropic",
                    direct_anthropic(anthropic_client, ANTHROPIC_MODEL.split("/", 1)[1]),
                    proxied_stub(stub, user, ANTHROPIC_MODEL),
                )
    finally:
        await openai_client.close()
        await anthropic_client.close()
