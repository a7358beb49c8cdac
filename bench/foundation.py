"""Foundation benchmarks on the in-process stack (SQLite, demo model):

- store event append throughput, unbatched and batched (events/s);
- append-to-subscriber latency on a live StreamRunEvents (p50/p99);
- through the gateway: time to the first streamed event and to run completion (p50/p99).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from google.protobuf.duration_pb2 import Duration

from gateway.app import create_app
from steward.logs import configure_logging
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.stack import Stack, running_stack

Metadata = tuple[tuple[str, str], ...]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def _claimed_run(
    runs: pb_grpc.RunServiceAsyncStub, conversations: pb_grpc.ConversationServiceAsyncStub, user: Metadata
) -> tuple[str, int]:
    conversation = (await conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)).conversation
    run = (await runs.CreateRun(pb.CreateRunRequest(conversation_id=conversation.id), metadata=user)).run
    claimed = await runs.ClaimRun(
        pb.ClaimRunRequest(id=run.id, holder="bench", lease_ttl=Duration(seconds=600)), metadata=user
    )
    return run.id, claimed.run.lease_epoch


async def store_throughput(stack: Stack) -> None:
    user = principal_metadata(stack.secret, f"bench-{uuid.uuid4().hex}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.store.port}") as channel:
        runs, conversations = pb_grpc.RunServiceStub(channel), pb_grpc.ConversationServiceStub(channel)
        for label, calls, per_call in (("unbatched", 1000, 1), ("batched x100", 100, 100)):
            run_id, epoch = await _claimed_run(runs, conversations, user)
            batch = [ev.RunEvent(step=1, text_delta=ev.TextDelta(text="token ")) for _ in range(per_call)]
            started = time.perf_counter()
            for _ in range(calls):
                await runs.AppendRunEvents(
                    pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=batch), metadata=user
                )
            elapsed = time.perf_counter() - started
            print(f"store append {label:>13}: {calls * per_call / elapsed:9.0f} events/s ({calls} calls)")


async def subscriber_latency(stack: Stack, samples: int = 300) -> None:
    user = principal_metadata(stack.secret, f"bench-{uuid.uuid4().hex}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.store.port}") as channel:
        runs, conversations = pb_grpc.RunServiceStub(channel), pb_grpc.ConversationServiceStub(channel)
        run_id, epoch = await _claimed_run(runs, conversations, user)
        received: asyncio.Queue[float] = asyncio.Queue()

        async def follow() -> None:
            async for _ in runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=run_id, follow=True), metadata=user):
                received.put_nowait(time.perf_counter())

        follower = asyncio.create_task(follow())
        latencies = []
        for _ in range(samples):
            sent = time.perf_counter()
            await runs.AppendRunEvents(
                pb.AppendRunEventsRequest(
                    run_id=run_id, lease_epoch=epoch, events=[ev.RunEvent(step=1, text_delta=ev.TextDelta(text="x"))]
                ),
                metadata=user,
            )
            latencies.append((await asyncio.wait_for(received.get(), 10)) - sent)
        follower.cancel()
        ms = [value * 1000 for value in latencies]
        print(
            f"append-to-subscriber: p50 {_percentile(ms, 50):.2f} ms, "
            f"p99 {_percentile(ms, 99):.2f} ms ({samples} events)"
        )


async def gateway_runs(stack: Stack, samples: int = 30) -> None:
    runner = web.AppRunner(create_app(stack.gateway_settings()), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    first_event: list[float] = []
    completed: list[float] = []
    headers = {"Authorization": f"Bearer {stack.dev_token}"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
            conversation = await (await http.post("/api/v1/conversations", json={})).json()
            for index in range(samples):
                started = time.perf_counter()
                posted = await http.post(
                    f"/api/v1/conversations/{conversation['id']}/messages", json={"content": f"bench {index}"}
                )
                events_url = (await posted.json())["events_url"]
                async with http.get(events_url) as stream:
                    async for line in stream.content:
                        if line.startswith(b"event: text_delta") and len(first_event) == index:
                            first_event.append(time.perf_counter() - started)
                        if line.startswith(b"event: run_completed"):
                            completed.append(time.perf_counter() - started)
                            break
    finally:
        await runner.cleanup()
    for label, values in (("first text event", first_event), ("run completed", completed)):
        ms = [value * 1000 for value in values]
        print(
            f"gateway {label:>16}: p50 {_percentile(ms, 50):.1f} ms, "
            f"p99 {_percentile(ms, 99):.1f} ms ({len(ms)} runs, demo model)"
        )


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        configure_logging("bench", "WARNING", json=False)
        async with running_stack(Path(data_dir), demo_token_interval=0.0) as stack:
            print("Steward foundation benchmarks (SQLite, in-process stack, 2-core target machine)")
            await store_throughput(stack)
            await subscriber_latency(stack)
            await gateway_runs(stack)
