"""Every RPC in the generated descriptors is served by its service's registered servicer."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from steward.rpc.server import GrpcServer
from tests.support.grpc_helpers import all_services, principal_metadata
from tests.support.stack import Stack

SERVICES = sorted(all_services(), key=lambda item: item[1].full_name)
METHODS = [(area, service, method) for area, service in SERVICES for method in service.methods]


def _server(stack: Stack, area: str) -> GrpcServer:
    servers: dict[str, GrpcServer] = {
        "store": stack.store,
        "provider": stack.provider,
        "confirm": stack.confirm,
        "runtime": stack.runtime,
    }
    return servers[area]


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def test_every_area_has_services() -> None:
    assert {area for area, _ in SERVICES} == {"store", "provider", "confirm", "runtime"}
    assert len(METHODS) >= 50


@pytest.mark.parametrize(("area", "service", "method"), METHODS, ids=lambda v: getattr(v, "full_name", v))
async def test_rpc_is_registered_and_answers_with_a_reason(
    stack: Stack, area: str, service: object, method: object
) -> None:
    """An empty request reaches our servicer: it succeeds or fails with ErrorInfo from our domain.

    A method without a registered servicer would fail with a bare UNIMPLEMENTED and no ErrorInfo.
    """
    request_class = message_factory.GetMessageClass(method.input_type)  # type: ignore[attr-defined]
    response_class = message_factory.GetMessageClass(method.output_type)  # type: ignore[attr-defined]
    path = f"/{service.full_name}/{method.name}"  # type: ignore[attr-defined]
    metadata = principal_metadata(stack.secret, f"contract-{uuid.uuid4().hex}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{_server(stack, area).port}") as channel:
        try:
            if method.server_streaming:  # type: ignore[attr-defined]
                call = channel.unary_stream(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )
                async for _ in call(request_class(), metadata=metadata, timeout=5):
                    pass
            else:
                unary = channel.unary_unary(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )
                await unary(request_class(), metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as caught:
            failure = caught
        else:
            return
    info = _error_info(failure)
    assert info is not None, f"{path}: {failure.code().name} {failure.details()} carries no ErrorInfo"
    assert info.domain == f"{area}.steward"
    assert info.reason
    assert failure.code() != grpc.StatusCode.INTERNAL, f"{path}: {info.reason}"


@pytest.mark.parametrize("area", ["store", "provider", "confirm", "runtime"])
async def test_calls_without_a_valid_principal_are_refused(stack: Stack, area: str) -> None:
    service = next(s for a, s in SERVICES if a == area)
    method = service.methods[0]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{_server(stack, area).port}") as channel:
        call = channel.unary_unary(
            path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString
        )
        for metadata, reason in [
            ((), "PRINCIPAL_MISSING"),
            ((("x-steward-principal", "not-a-token"),), "PRINCIPAL_INVALID"),
            (principal_metadata("another-secret-that-is-long-enough-000", "u"), "PRINCIPAL_INVALID"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(request_class(), metadata=metadata, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            info = _error_info(raised.value)
            assert info is not None
            assert info.reason == reason


@pytest.mark.parametrize("area", ["store", "provider", "confirm", "runtime"])
async def test_health_and_reflection_list_every_service(stack: Stack, area: str) -> None:
    expected = {s.full_name for a, s in SERVICES if a == area}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{_server(stack, area).port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", *expected]:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for reply in stream:
            listed = {s.name for s in reply.list_services_response.service}
            break
    assert expected <= listed
