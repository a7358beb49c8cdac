"""The error model: one exception type carrying a gRPC code and a stable reason.

Services raise `StewardError`; an interceptor turns it into `google.rpc.Status`
with `ErrorInfo{reason, domain, metadata}`. Clients turn an `AioRpcError` back
into a `StewardError` with `from_rpc_error` (the client interceptors on every
`create_channel` channel do it, so callers catch `StewardError`); a transport failure's raw gRPC text (addresses,
ports) goes to the log only, never into an error's message. The gateway maps errors to HTTP with
`http_status_for`, the one table for the whole system: by code, with a few
reasons overriding their code's status.
"""

from __future__ import annotations

import enum

import grpc
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from steward.common.v1 import errors_pb2

__all__ = [
    "KNOWN_REASONS",
    "Reason",
    "StewardError",
    "failed_precondition",
    "from_rpc_error",
    "http_status_for",
    "internal",
    "invalid_argument",
    "not_found",
    "not_implemented",
    "to_grpc_status",
    "unauthenticated",
]

log = structlog.get_logger(__name__)

_PREFIX = "ERROR_REASON_"

# Every stable reason a service may send, from steward.common.v1.ErrorReason.
KNOWN_REASONS: frozenset[str] = frozenset(
    value.name.removeprefix(_PREFIX)
    for value in errors_pb2.ErrorReason.DESCRIPTOR.values
    if value.name != "ERROR_REASON_UNSPECIFIED"
)


class Reason(enum.StrEnum):
    """Every stable reason a service may send: steward.common.v1.ErrorReason without its prefix, in its order.

    A `StrEnum`, so a member equals its text (`Reason.RUN_NOT_FOUND == "RUN_NOT_FOUND"`); callers compare
    `error.reason` with members, never with string literals. `tests/test_errors.py` pins it to the contract.
    """

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    PRINCIPAL_MISSING = "PRINCIPAL_MISSING"
    PRINCIPAL_INVALID = "PRINCIPAL_INVALID"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    INTERNAL = "INTERNAL"
    DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
    CONVERSATION_NOT_FOUND = "CONVERSATION_NOT_FOUND"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    CONFIRMATION_NOT_FOUND = "CONFIRMATION_NOT_FOUND"
    LEASE_LOST = "LEASE_LOST"
    RUN_STATE_CONFLICT = "RUN_STATE_CONFLICT"
    CURSOR_EXPIRED = "CURSOR_EXPIRED"
    REQUEST_ID_CONFLICT = "REQUEST_ID_CONFLICT"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    SECRETS_BACKEND_UNAVAILABLE = "SECRETS_BACKEND_UNAVAILABLE"
    DECISION_INVALID = "DECISION_INVALID"
    CONFIRMATION_ALREADY_DECIDED = "CONFIRMATION_ALREADY_DECIDED"
    CONFIRMATION_EXPIRED = "CONFIRMATION_EXPIRED"
    ARGUMENTS_MISMATCH = "ARGUMENTS_MISMATCH"
    TOO_LARGE = "TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    CONFIRMATION_STATE_CONFLICT = "CONFIRMATION_STATE_CONFLICT"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    MALFORMED_JSON = "MALFORMED_JSON"
    TOKEN_MISSING = "TOKEN_MISSING"  # noqa: S105 (a reason, not a secret)
    TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    BAD_REQUEST = "BAD_REQUEST"
    AGENT_ALREADY_EXISTS = "AGENT_ALREADY_EXISTS"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    TOKEN_NOT_FOUND = "TOKEN_NOT_FOUND"  # noqa: S105
    MESSAGE_ID_CONFLICT = "MESSAGE_ID_CONFLICT"
    MODEL_UNPRICED = "MODEL_UNPRICED"
    AGENT_FILE_INVALID = "AGENT_FILE_INVALID"
    ORIGIN_MISMATCH = "ORIGIN_MISMATCH"


class StewardError(Exception):
    """A failure with a gRPC status code and a stable reason code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        domain: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.domain = domain

    def __repr__(self) -> str:
        return f"StewardError({self.code.name}, {self.reason!r}, {self.message!r})"


def invalid_argument(field: str, message: str) -> StewardError:
    """A malformed or missing request field."""
    return StewardError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", message, metadata={"field": field})


def not_found(reason: str, message: str) -> StewardError:
    """A resource that does not exist or belongs to someone else."""
    return StewardError(grpc.StatusCode.NOT_FOUND, reason, message)


def failed_precondition(reason: str, message: str) -> StewardError:
    """A request the resource's current state does not allow."""
    return StewardError(grpc.StatusCode.FAILED_PRECONDITION, reason, message)


def unauthenticated(reason: str, message: str) -> StewardError:
    """A missing or invalid principal."""
    return StewardError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def not_implemented(what: str) -> StewardError:
    """An RPC that is in the contract but not built yet."""
    return StewardError(grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", f"{what} is not implemented yet")


def internal() -> StewardError:
    """An unexpected failure; the details stay in the log."""
    return StewardError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")


def to_grpc_status(error: StewardError, domain: str) -> grpc.Status:
    """Encode an error as a gRPC status with ErrorInfo in its details."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=error.domain or domain, metadata=error.metadata)
    from google.protobuf import any_pb2

    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    result: grpc.Status = rpc_status.to_status(status)
    return result


def from_rpc_error(exc: grpc.aio.AioRpcError, area: str = "", *, expected: bool = False) -> StewardError:
    """Decode a failed call into a StewardError, keeping the remote reason if there is one.

    A Steward service's `ErrorInfo` message is written for clients and travels as it is. A failure without one
    is the transport's (a refused connection, a deadline, a reset stream): gRPC's text for it names internal
    addresses and ports, so it goes to the log (with the request id bound there) and the error carries a fixed
    message naming only the kind of failure and the `area` called ("store", ...; "" when not known).
    """
    code = exc.code()
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                message = exc.details() or code.name
                return StewardError(code, info.reason, message, metadata=dict(info.metadata), domain=info.domain)
    if code == grpc.StatusCode.CANCELLED:
        # A call this process cancelled raises asyncio.CancelledError, never an AioRpcError: a CANCELLED that
        # arrives was the server's. gRPC gives it to calls a stopping server had accepted but never handed to a
        # handler (grpc/grpc#41785): nothing ran, the server went away, so it is what UNAVAILABLE says.
        log.info("rpc_cancelled_by_server", area=area or "unknown", details=exc.details() or "")
        return StewardError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.DEPENDENCY_UNAVAILABLE,
            _transport_message(grpc.StatusCode.UNAVAILABLE, area),
        )
    fallback = {
        grpc.StatusCode.UNAVAILABLE: "DEPENDENCY_UNAVAILABLE",
        grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
        grpc.StatusCode.UNIMPLEMENTED: "NOT_IMPLEMENTED",
    }.get(code, "INTERNAL")
    # An `expected` failure (a probe of a service still starting) is routine: not an operator's concern.
    report = log.debug if expected else log.warning
    report("rpc_transport_failure", area=area or "unknown", code=code.name, details=exc.details() or "")
    return StewardError(code, fallback, _transport_message(code, area))


def _transport_message(code: grpc.StatusCode, area: str = "") -> str:
    """The client-facing message of a transport failure of a call to `area`'s service: its kind, nothing more."""
    service = f"the {area} service" if area else "a service Steward depends on"
    template = _TRANSPORT_MESSAGES.get(code, "{service} failed to answer")
    return template.format(service=service)


_TRANSPORT_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "{service} is unavailable; try again later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "{service} did not answer in time",
    grpc.StatusCode.UNIMPLEMENTED: "{service} does not support this call",
    grpc.StatusCode.CANCELLED: "the call to {service} was cancelled",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "{service} refused the call (too large, or too many at once)",
}


# google/rpc/code.proto's HTTP mapping; everything else is 500.
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


# Reasons whose FAILED_PRECONDITION means more than "bad request": conflicts with the resource's current
# state are 409, and an event cursor older than the retained log is 410 Gone. The override applies only to
# FAILED_PRECONDITION, the code the contract gives these reasons, so a reason never turns another code's
# status (401, 5xx, ...) into a 4xx conflict.
_HTTP_STATUS_BY_REASON: dict[str, int] = {
    "CONFIRMATION_ALREADY_DECIDED": 409,
    "CONFIRMATION_EXPIRED": 409,
    "CONFIRMATION_STATE_CONFLICT": 409,
    "RUN_STATE_CONFLICT": 409,
    "LEASE_LOST": 409,
    "CURSOR_EXPIRED": 410,
}


def http_status_for(code: grpc.StatusCode, reason: str = "") -> int:
    """The HTTP status for a gRPC status code and, for FAILED_PRECONDITION and DECISION_INVALID, its reason."""
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason in _HTTP_STATUS_BY_REASON:
        return _HTTP_STATUS_BY_REASON[reason]
    if code == grpc.StatusCode.INVALID_ARGUMENT and reason == Reason.DECISION_INVALID:
        return 422  # a well-formed request whose decision the confirmation's decision schema refuses
    return _HTTP_STATUS.get(code, 500)
