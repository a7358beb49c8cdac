"""The client error interceptors (steward/rpc/client_errors.py) against the real store: a failed unary call and a
failed stream raise `StewardError` with the remote's code and reason; the call object still cancels. A server that
cannot be reached is a fixed message naming the area (its address and gRPC's text go to the log only)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import structlog

from gateway.leaks import leak
from steward import errors
from steward.errors import Reason, StewardError
from steward.rpc.client_errors import error_interceptors
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.stack import Stack


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.address(stack.store), interceptors=error_interceptors()) as opened:
        yield opened


async def test_a_failed_unary_call_raises_the_remote_reason(stack: Stack, channel: grpc.aio.Channel) -> None:
    runs = store_grpc.RunServiceStub(channel)
    user = principal_metadata(stack.secret, f"user-{uuid.uuid4().hex}")
    with pytest.raises(StewardError) as raised:
        await runs.GetRun(store_pb.GetRunRequest(id=str(uuid.uuid4())), metadata=user)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.reason == Reason.RUN_NOT_FOUND


async def test_a_call_without_a_principal_raises_its_reason(channel: grpc.aio.Channel) -> None:
    with pytest.raises(StewardError) as raised:
        await store_grpc.RunServiceStub(channel).GetRun(store_pb.GetRunRequest(id=str(uuid.uuid4())))
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == Reason.PRINCIPAL_MISSING


async def test_a_failed_stream_raises_the_remote_reason(stack: Stack, channel: grpc.aio.Channel) -> None:
    runs = store_grpc.RunServiceStub(channel)
    user = principal_metadata(stack.secret, f"user-{uuid.uuid4().hex}")
    stream = runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=str(uuid.uuid4())), metadata=user)
    with pytest.raises(StewardError) as raised:
        async for _ in stream:
            pass
    assert raised.value.reason == Reason.RUN_NOT_FOUND


async def test_a_successful_call_answers_as_before(stack: Stack, channel: grpc.aio.Channel) -> None:
    user = principal_metadata(stack.secret, f"user-{uuid.uuid4().hex}")
    created = await store_grpc.ConversationServiceStub(channel).CreateConversation(
        store_pb.CreateConversationRequest(title="interceptors"), metadata=user
    )
    assert created.conversation.title == "interceptors"


async def test_an_unreachable_server_is_dependency_unavailable() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1", interceptors=error_interceptors()) as closed:
        with pytest.raises(StewardError) as raised:
            await store_grpc.RunServiceStub(closed).GetRun(store_pb.GetRunRequest(id="x"), timeout=5)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.reason == Reason.DEPENDENCY_UNAVAILABLE
    assert raised.value.message == "a service Steward depends on is unavailable; try again later"


async def test_an_unreachable_area_is_named_and_its_address_only_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    with structlog.testing.capture_logs() as logs:
        # A fresh logger: one an earlier test's configure_logging cached on first use would bypass the capture.
        monkeypatch.setattr(errors, "log", structlog.get_logger("steward.errors"))
        async with grpc.aio.insecure_channel("127.0.0.1:1", interceptors=error_interceptors("store")) as closed:
            stream = store_grpc.RunServiceStub(closed).StreamRunEvents(store_pb.StreamRunEventsRequest(run_id="x"))
            with pytest.raises(StewardError) as raised:
                async for _ in stream:
                    pass
    assert raised.value.reason == Reason.DEPENDENCY_UNAVAILABLE
    assert raised.value.message == "the store service is unavailable; try again later"
    assert leak(raised.value.message) is None
    [failure] = [entry for entry in logs if entry["event"] == "rpc_transport_failure"]
    assert (failure["area"], failure["code"], failure["log_level"]) == ("store", "UNAVAILABLE", "warning")
    assert "127.0.0.1:1" in failure["details"]  # the operator's clue stays in the log


async def _cancelling_server() -> tuple[grpc.aio.Server, int]:
    """A server whose one method answers CANCELLED, as a stopping gRPC server answers the calls it had accepted
    but never handed to a handler (grpc/grpc#41785), or never answers at all (`/t/Hang`)."""

    async def cancel(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
        raise AssertionError("unreachable")

    async def hang(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Cancel": grpc.unary_unary_rpc_method_handler(cancel),
        "Hang": grpc.unary_unary_rpc_method_handler(hang),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_call_the_server_cancelled_is_unavailable_and_one_cancelled_here_stays_cancelled() -> None:
    server, port = await _cancelling_server()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=error_interceptors("store")) as opened:
            cancelled: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = opened.unary_unary("/t/Cancel")
            hanging: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = opened.unary_unary("/t/Hang")
            with pytest.raises(StewardError) as raised:
                await cancelled(b"", timeout=5)
            # Nothing ran and the server went away: the caller may try again, as for any UNAVAILABLE.
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE
            assert raised.value.reason == Reason.DEPENDENCY_UNAVAILABLE
            assert raised.value.message == "the store service is unavailable; try again later"
            call = hanging(b"", timeout=5)
            waiting = asyncio.ensure_future(call)
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):  # the caller's own cancel is never a StewardError
                await waiting
    finally:
        await server.stop(0)
