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
        (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNPRICED", 400),  # the deployment's price table, not a state
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


# A reason compared with a string literal, either way round: `reason == "X"`, `reason in ("X", ...)`, `"X" != reason`.
_REASON_LITERAL = re.compile(
    r"""\breason\s*(?:==|!=|(?:not\s+)?in)\s*[(\[{]?\s*["']|["'][A-Z_]+["']\s*(?:==|!=)\s*[\w.()]*\breason\b"""
)


def test_code_compares_reasons_with_enum_members_not_string_literals() -> None:
    assert _REASON_LITERAL.search('if error.reason in ("LEASE_LOST", "RUN_NOT_FOUND"):')  # the pattern still bites
    assert not _REASON_LITERAL.search("if error.reason == Reason.LEASE_LOST:")
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _hand_written_sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _REASON_LITERAL.search(line)
    ]
    assert found == [], "compare error.reason with steward.errors.Reason members"


# Where grpc's AioRpcError may be named: the RPC plumbing (the client interceptors that turn it into StewardError, the
# server interceptor that decodes one from a channel not made by `create_channel`) and `from_rpc_error`. Everyone
# else catches StewardError: a channel from `create_channel`, or one given `error_interceptors()`, raises nothing else.
_AIO_RPC_ERROR_HOMES = (Path("libs/steward/rpc"), Path("libs/steward/errors.py"))
# Any other file that truly needs it, with the reason why.
_AIO_RPC_ERROR_ALSO: dict[Path, str] = {}


def test_only_the_rpc_plumbing_names_aio_rpc_error() -> None:
    naming = {path.relative_to(REPO) for path in _hand_written_sources() if "AioRpcError" in path.read_text()}
    assert Path("libs/steward/rpc/client_errors.py") in naming  # the scan still reads the plumbing
    elsewhere = {path for path in naming if not any(path.is_relative_to(home) for home in _AIO_RPC_ERROR_HOMES)}
    assert elsewhere - _AIO_RPC_ERROR_ALSO.keys() == set(), "catch steward.errors.StewardError instead"
