"""The shared gRPC plumbing: graceful shutdown order and the per-method call policy."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.confirm.server import create_server as create_confirm
from steward.auth import TokenVerifier
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.errors import Reason, StewardError, from_rpc_error
from steward.rpc.channels import AREAS, create_channel, service_config
from steward.rpc.server import GrpcServer, registration, start_grpc_server
from steward.settings import CommonSettings
from tests.support.grpc_helpers import all_services, principal_metadata

# Methods the channel may retry: reads, and writes that are idempotent by contract.
IDEMPOTENT_PREFIXES = (
    "Get",
    "List",
    "Delete",
    "Revoke",
    "Cancel",
    "Acknowledge",
    "Summarize",
    "Set",
    "RequestRun",
    "Verify",
    "Apply",  # by content: a retry of an apply that went through answers "unchanged"
)


async def test_stop_flips_health_to_not_serving_before_the_server_goes(tmp_path: Path) -> None:
    settings = CommonSettings.model_validate({"internal_secret": secrets.token_urlsafe(32), "data_dir": tmp_path})
    server = await create_confirm(settings, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        statuses = []
        async for reply in watch:
            statuses.append(reply.status)
            if len(statuses) == 1:
                stopping = asyncio.create_task(server.stop(2))
            else:
                break
        await asyncio.wait_for(stopping, 10)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def _policy(area: str, service: str, method: str) -> dict[str, object]:
    """The methodConfig gRPC applies to a method: the method entry, else the service entry."""
    configs = service_config(area)["methodConfig"]
    for want in ({"service": service, "method": method}, {"service": service}):
        for config in configs:
            if want in config["name"]:
                return dict(config)
    raise AssertionError(f"{service}/{method} has no methodConfig")


@pytest.mark.parametrize("area", AREAS)
def test_every_method_has_a_deadline_and_only_idempotent_ones_retry(area: str) -> None:
    methods = [(s.full_name, m.name) for a, s in all_services() if a == area for m in s.methods]
    assert methods
    for service, method in methods:
        policy = _policy(area, service, method)
        assert str(policy.get("timeout", "")).endswith("s"), f"{service}/{method} has no deadline"
        if "retryPolicy" in policy:
            assert method.startswith(IDEMPOTENT_PREFIXES), f"{service}/{method} is retried but not idempotent"
            assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]  # type: ignore[index]


class _Paced(confirm_grpc.ConfirmationServiceServicer):
    """A stand-in servicer for the server plumbing alone: GetConfirmation takes `SLOW` seconds, ListConfirmations
    answers at once, WatchDecisions sends one item and then follows for ever."""

    async def GetConfirmation(self, request: confirm_pb.GetConfirmationRequest, context: Any) -> Any:
        await asyncio.sleep(SLOW)
        return confirm_pb.GetConfirmationResponse()

    async def ListConfirmations(self, request: confirm_pb.ListConfirmationsRequest, context: Any) -> Any:
        return confirm_pb.ListConfirmationsResponse()

    async def WatchDecisions(self, request: confirm_pb.WatchDecisionsRequest, context: Any) -> AsyncIterator[Any]:
        yield confirm_pb.WatchDecisionsResponse(cursor="1")
        await asyncio.Event().wait()


SLOW = 1.0
SECRET = secrets.token_urlsafe(32)


@contextlib.asynccontextmanager
async def _paced_server(feeds: tuple[str, ...]) -> AsyncIterator[GrpcServer]:
    server = await start_grpc_server(
        [registration(confirm_pb, confirm_grpc, "ConfirmationService", _Paced(), feeds=feeds)],  # type: ignore[abstract]  # only three methods are called
        "127.0.0.1:0",
        verifier=TokenVerifier(SECRET),
        domain="test.steward",
    )
    try:
        yield server
    finally:
        await server.server.stop(0)  # a failed test's server goes too


def _cursor(item: object) -> str:
    assert isinstance(item, confirm_pb.WatchDecisionsResponse), item
    return item.cursor


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    return int(reply.status)


async def test_stop_reports_not_serving_serves_through_the_pause_ends_feeds_and_finishes_calls() -> None:
    who = principal_metadata(SECRET, "alice")
    async with (
        _paced_server(feeds=("WatchDecisions",)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = confirm_grpc.ConfirmationServiceStub(channel)
        feed = stub.WatchDecisions(confirm_pb.WatchDecisionsRequest(), metadata=who)
        assert _cursor(await feed.read()) == "1"
        slow = asyncio.ensure_future(stub.GetConfirmation(confirm_pb.GetConfirmationRequest(id="x"), metadata=who))
        await asyncio.sleep(0.1)  # the slow call is in flight
        began = time.monotonic()
        stopping = asyncio.create_task(server.stop(10, pause=0.5))
        await asyncio.sleep(0.05)
        # During the pause: health says NOT_SERVING, and the listener still takes new calls.
        assert await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        await stub.ListConfirmations(confirm_pb.ListConfirmationsRequest(), metadata=who, timeout=1)
        assert time.monotonic() - began < 0.5
        # After the pause: the feed ends with UNAVAILABLE (SHUTTING_DOWN) at once, not when the grace runs out.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(feed.read(), 5)
        feed_ended = time.monotonic() - began
        error = from_rpc_error(ended.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN)
        assert 0.5 <= feed_ended < 1.5, feed_ended
        # The unary call in flight finishes with its answer; the server is gone once it has.
        assert await asyncio.wait_for(slow, 5) == confirm_pb.GetConfirmationResponse()
        await asyncio.wait_for(stopping, 5)
        stopped = time.monotonic() - began
        assert stopped < 0.1 + SLOW + 1.0, stopped  # far less than the 10 s grace
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListConfirmations(confirm_pb.ListConfirmationsRequest(), metadata=who, timeout=1)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_stream_that_is_not_a_feed_runs_through_the_drain_and_gets_unavailable_when_the_grace_ends() -> None:
    """What the drain relies on for every other stream (the provider's Generate): gRPC ends it with UNAVAILABLE,
    which callers treat as a reason to try again, never CANCELLED."""
    who = principal_metadata(SECRET, "alice")
    async with _paced_server(feeds=()) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stream = confirm_grpc.ConfirmationServiceStub(channel).WatchDecisions(
            confirm_pb.WatchDecisionsRequest(), metadata=who
        )
        assert _cursor(await stream.read()) == "1"
        began = time.monotonic()
        stopping = asyncio.create_task(server.stop(0.8))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(stream.read(), 5)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - began >= 0.7  # not cut at the drain: at the end of the grace
        await asyncio.wait_for(stopping, 5)


def test_a_feed_must_be_a_streaming_method_of_the_service() -> None:
    with pytest.raises(ValueError, match="not a stream"):
        registration(confirm_pb, confirm_grpc, "ConfirmationService", object(), feeds=("GetConfirmation",)).feed_paths()
    with pytest.raises(KeyError):
        registration(confirm_pb, confirm_grpc, "ConfirmationService", object(), feeds=("Nope",)).feed_paths()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _start_paced_on(port: int, after: float) -> GrpcServer:
    await asyncio.sleep(after)
    return await start_grpc_server(
        [registration(confirm_pb, confirm_grpc, "ConfirmationService", _Paced())],  # type: ignore[abstract]
        f"127.0.0.1:{port}",
        verifier=TokenVerifier(SECRET),
        domain="test.steward",
    )


@pytest.mark.parametrize("wait", [0.0, 5.0])
async def test_a_call_waits_for_a_server_that_is_coming_back(wait: float) -> None:
    """A call made while its server is away (the channel failed to connect and backs off) waits up to
    `ready_wait` for it, then is answered; with no wait it fails at once, as before."""
    port = _free_port()
    who = principal_metadata(SECRET, "alice")
    channel = create_channel(f"127.0.0.1:{port}", "confirm", ready_wait=wait)
    stub = confirm_grpc.ConfirmationServiceStub(channel)
    request = confirm_pb.ListConfirmationsRequest()
    with pytest.raises(StewardError) as away:  # nothing there yet: the channel fails to connect
        await stub.ListConfirmations(request, metadata=who, timeout=0.2 if wait else None)
    assert away.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    starting = asyncio.create_task(_start_paced_on(port, after=1.5))
    began = time.monotonic()
    try:
        if wait:
            await stub.ListConfirmations(request, metadata=who)
            assert time.monotonic() - began < 1.5 + 2.5  # the server's start, and at most one reconnect backoff
        else:
            with pytest.raises(StewardError) as refused:
                await stub.ListConfirmations(request, metadata=who)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE  # the retry policy's tries (~0.7 s) all failed
            assert time.monotonic() - began < 1.5
    finally:
        server = await starting
        await server.stop(0)
        await channel.close()
