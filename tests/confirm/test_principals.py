"""Who may call what: user RPCs, runtime-only RPCs and the feed RPCs, each refusing everyone else.

Every RPC must be in exactly one group: a new RPC without one fails `test_every_rpc_is_in_a_group`.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from steward.auth import SERVICE_PREFIX
from steward.confirm.v1 import confirm_service_pb2 as pb
from tests.confirm.conftest import ConfirmUnderTest, principal, refused

SERVICE = pb.DESCRIPTOR.services_by_name["ConfirmationService"]
GROUPS = {
    "user": {"GetConfirmation", "ListConfirmations", "DecideConfirmation", "ListAuditEvents"},
    "runtime for a user": {
        "CreateConfirmation",
        "CancelConfirmations",
        "AcknowledgeDecision",
        "BeginExecution",
        "FinishExecution",
        "GetExecution",
    },
    "runtime service": {"WatchDecisions", "ListDecidedConfirmations"},
}
# Who each group admits, among these principals: (user id, actor).
PRINCIPALS = {
    "a user": ("user-p", ""),
    "the runtime for a user": ("user-p", "runtime"),
    "the gateway for a user": ("user-p", "gateway"),
    "the runtime service": (f"{SERVICE_PREFIX}runtime", "runtime"),
    "another service": (f"{SERVICE_PREFIX}gateway", ""),
}
ALLOWED = {
    "user": {"a user", "the runtime for a user", "the gateway for a user"},
    "runtime for a user": {"the runtime for a user"},
    "runtime service": {"the runtime service"},
}
DENIED = [
    (method, who)
    for group, methods in GROUPS.items()
    for method in sorted(methods)
    for who in PRINCIPALS
    if who not in ALLOWED[group]
]


def test_every_rpc_is_in_a_group() -> None:
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(m.name for m in SERVICE.methods)


async def _call(confirm: ConfirmUnderTest, method_name: str, metadata: Any) -> None:
    method = SERVICE.methods_by_name[method_name]
    request_class = message_factory.GetMessageClass(method.input_type)
    rpc = getattr(confirm.stub, method_name)
    if method.server_streaming:
        async for _ in rpc(request_class(), metadata=metadata):
            pass
    else:
        await rpc(request_class(), metadata=metadata)


async def _code(confirm: ConfirmUnderTest, method_name: str, metadata: Any) -> grpc.StatusCode:
    try:
        await _call(confirm, method_name, metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("method", "who"), DENIED)
async def test_principals_outside_the_group_are_denied(confirm: ConfirmUnderTest, method: str, who: str) -> None:
    user_id, actor = PRINCIPALS[who]
    error = await refused(_call(confirm, method, principal(confirm.secret, user_id, actor)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


@pytest.mark.parametrize("method", sorted(GROUPS["user"] | GROUPS["runtime for a user"]))
async def test_allowed_principals_get_past_the_check(confirm: ConfirmUnderTest, method: str) -> None:
    """With an empty request, an allowed principal gets an answer about the request, never PERMISSION_DENIED."""
    group = next(name for name, methods in GROUPS.items() if method in methods)
    for who in sorted(ALLOWED[group]):
        user_id, actor = PRINCIPALS[who]
        code = await _code(confirm, method, principal(confirm.secret, user_id, actor))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (who, code)
