"""The error model: the gRPC-to-HTTP table and the reason catalogue."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from steward.common.v1 import errors_pb2
from steward.errors import KNOWN_REASONS, Reason, http_status_for


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_grpc_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    assert http_status_for(code) == status


@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_ALREADY_DECIDED", 409),
        (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_EXPIRED", 409),
        (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_STATE_CONFLICT", 409),
        (grpc.StatusCode.FAILED_PRECONDITION, "RUN_STATE_CONFLICT", 409),
        (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_LOST", 409),
        (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED", 410),
        (grpc.StatusCode.FAILED_PRECONDITION, "ARGUMENTS_MISMATCH", 400),
        (grpc.StatusCode.FAILED_PRECONDITION, "", 400),
        (grpc.StatusCode.INTERNAL, "RUN_STATE_CONFLICT", 500),  # a reason overrides only its own code
        (grpc.StatusCode.NOT_FOUND, "CURSOR_EXPIRED", 404),
    ],
)
def test_state_conflicts_override_failed_precondition_by_reason(
    code: grpc.StatusCode, reason: str, status: int
) -> None:
    assert http_status_for(code, reason) == status
    assert {reason} <= KNOWN_REASONS | {""}


REPO = Path(__file__).resolve().parent.parent
# Calls whose reason argument is a string literal: not_found("X", ...), HttpError(400, "X", ...), ...
_REASON_ARG = re.compile(
    r"""(?:not_found|failed_precondition|unauthenticated|StewardError\(grpc\.StatusCode\.\w+,|"""
    r'HttpError\([\w.]+,|problem\([\w.]+,)\(?\s*"([A-Z_]+)"'
)


def _hand_written_sources() -> list[Path]:
    roots = [REPO / "services", REPO / "gateway", REPO / "cli", REPO / "libs" / "steward"]
    return [p for root in roots for p in root.rglob("*.py") if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def test_every_reason_raised_in_code_is_in_the_contract() -> None:
    found = {m.group(1) for path in _hand_written_sources() for m in _REASON_ARG.finditer(path.read_text())}
    assert len(found) >= 10, found  # the pattern still finds the call sites
    assert found - KNOWN_REASONS == set()


def test_the_reason_enum_is_the_contracts_catalogue_in_its_order() -> None:
    contract = [v.name.removeprefix("ERROR_REASON_") for v in errors_pb2.ErrorReason.DESCRIPTOR.values]
    assert [reason.value for reason in Reason] == contract[1:]  # all but ERROR_REASON_UNSPECIFIED
    assert {str(reason) for reason in Reason} == KNOWN_REASONS
    assert Reason.RUN_NOT_FOUND == "RUN_NOT_FOUND"  # a member equals its text on the wire
