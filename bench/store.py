"""Store benchmarks on SQLite and Postgres (through gRPC, as the runtime uses the store):

- event append throughput: unbatched (one event per call, sequential and 16 concurrent
  writers) and batched (100 events per call), in events/s;
- append-to-subscriber latency on a live StreamRunEvents, p50 and p99.

Targets (issue 3, SQLite on the 2-core machine): >= 20,000 events/s batched, p99 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration

from services.store.server import create_server
from services.store.settings import StoreSettings
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.pg import PostgresUnavailableError, create_scratch_database, drop_scratch_database

Metadata = tuple[tuple[str, str], ...]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class StoreBench:
    def __init__(self, channel: grpc.aio.Channel, user: Metadata) -> None:
        self.runs = pb_grpc.RunServiceStub(channel)
        self.conversations = pb_grpc.ConversationServiceStub(channel)
        self.user = user

    async def claimed_run(self) -> tuple[str, int]:
        conversation = await self.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=self.user)
        run = await self.runs.CreateRun(
            pb.CreateRunRequest(conversation_id=conversation.conversation.id), metadata=self.user
        )
        claim = pb.ClaimRunRequest(id=run.run.id, holder="bench", lease_ttl=Duration(seconds=600))
        claimed = await self.runs.ClaimRun(claim, metadata=self.user)
        return run.run.id, claimed.run.lease_epoch

    async def append(self, run_id: str, epoch: int, count: int) -> None:
        events = [ev.RunEvent(step=1, text_delta=ev.TextDelta(text="token ")) for _ in range(count)]
        await self.runs.AppendRunEvents(
            pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=events), metadata=self.user
        )

    async def throughput(self, calls: int, per_call: int, writers: int) -> float:
        runs = [await self.claimed_run() for _ in range(writers)]

        async def writer(run_id: str, epoch: int) -> None:
            for _ in range(calls // writers):
                await self.append(run_id, epoch, per_call)

        started = time.perf_counter()
        await asyncio.gather(*(writer(run_id, epoch) for run_id, epoch in runs))
        return (calls // writers) * writers * per_call / (time.perf_counter() - started)

    async def latency(self, samples: int) -> list[float]:
        run_id, epoch = await self.claimed_run()
        received: asyncio.Queue[float] = asyncio.Queue()

        async def follow() -> None:
            request = pb.StreamRunEventsRequest(run_id=run_id, follow=True)
            async for _ in self.runs.StreamRunEvents(request, metadata=self.user):
                received.put_nowait(time.perf_counter())

        reader = asyncio.create_task(follow())
        await self.append(run_id, epoch, 1)  # warm the stream
        await asyncio.wait_for(received.get(), 10)
        latencies = []
        for _ in range(samples):
            sent = time.perf_counter()
            await self.append(run_id, epoch, 1)
            latencies.append((await asyncio.wait_for(received.get(), 10)) - sent)
        reader.cancel()
        return [value * 1000 for value in latencies]


async def bench_backend(name: str, url: str, data_dir: Path) -> None:
    secret = secrets.token_urlsafe(32)
    settings = StoreSettings.model_validate(
        {
            "internal_secret": secret,
            "token_pepper": secrets.token_urlsafe(32),
            "database_url": url,
            "data_dir": data_dir,
            "retention_interval": 0,
        }
    )
    server = await create_server(settings, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            bench = StoreBench(channel, principal_metadata(secret, f"bench-{uuid.uuid4().hex}"))
            await bench.throughput(50, 10, 1)  # warm-up
            results = [
                ("unbatched, 1 writer", await bench.throughput(1000, 1, 1)),
                ("unbatched, 16 writers", await bench.throughput(1600, 1, 16)),
                ("batched x100, 1 writer", await bench.throughput(200, 100, 1)),
            ]
            for label, rate in results:
                print(f"[{name:8}] append {label:>24}: {rate:9.0f} events/s")
            ms = await bench.latency(500)
            print(f"[{name:8}] append-to-subscriber: p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms")
    finally:
        await server.stop(0.5)


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        await bench_backend("sqlite", f"sqlite+aiosqlite:///{data_dir}/bench.db", Path(data_dir))
        try:
            url = await create_scratch_database()
        except PostgresUnavailableError as exc:
            print(f"[postgres] skipped: {exc}")
            return
        try:
            await bench_backend("postgres", url, Path(data_dir))
        finally:
            await drop_scratch_database(url)
