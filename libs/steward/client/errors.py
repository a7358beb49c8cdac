"""The client's one exception tree: a problem+json answer becomes a `StewardAPIError` subclass chosen by status.

Reasons stay plain strings (`"RUN_NOT_FOUND"`, the contract's names, listed in
`protos/steward/common/v1/errors.proto`): `steward.errors.Reason` would pull gRPC into the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "CursorExpiredError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerError",
    "StewardAPIError",
    "StewardClientError",
    "StewardConnectionError",
    "UnavailableError",
    "error_for_status",
    "parse_retry_after",
]


class StewardClientError(Exception):
    """Everything the client raises about the gateway derives from this."""


class StewardConnectionError(StewardClientError):
    """The gateway could not be reached, or an event stream could not be resumed within its policy."""


class StewardAPIError(StewardClientError):
    """The gateway answered with an error (RFC 9457 problem+json carrying Steward's stable `reason`)."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
        metadata: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {detail}" if detail else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after  # seconds, when the answer carried Retry-After
        self.metadata: dict[str, str] = dict(metadata or {})  # e.g. a 400's `field`, `in`, `pointer`
        # Several errors of one answer, e.g. AGENT_FILE_INVALID's: one per invalid document (file, document, field,
        # reason, detail).
        self.errors: list[dict[str, Any]] = [dict(item) for item in errors or ()]

    @property
    def field(self) -> str | None:
        """The request field a 400 `INVALID_ARGUMENT` names, when it names one."""
        return self.metadata.get("field")


class BadRequestError(StewardAPIError):
    """400: a malformed request (`INVALID_ARGUMENT` naming the field, `MALFORMED_JSON`, a failed precondition); 422: a
    decision the confirmation's decision schema refuses (`DECISION_INVALID`)."""


class AuthenticationError(StewardAPIError):
    """401: no valid token (`TOKEN_MISSING`, `TOKEN_INVALID`)."""


class PermissionDeniedError(StewardAPIError):
    """403: the token's scopes do not allow this (`PERMISSION_DENIED`)."""


class NotFoundError(StewardAPIError):
    """404: no such resource of the caller's (`RUN_NOT_FOUND`, `CONVERSATION_NOT_FOUND`, ...)."""


class ConflictError(StewardAPIError):
    """409: a conflict with the resource's state (`RUN_STATE_CONFLICT`, `CONFIRMATION_ALREADY_DECIDED`, ...)."""


class CursorExpiredError(StewardAPIError):
    """410 `CURSOR_EXPIRED`: the event cursor is older than the retained log; read the run from the start."""


class RateLimitedError(StewardAPIError):
    """429 `RATE_LIMITED`: wait `retry_after` seconds."""


class ServerError(StewardAPIError):
    """A 5xx other than 503."""


class UnavailableError(ServerError):
    """503: a service Steward depends on is unavailable; wait `retry_after` seconds."""


_BY_STATUS: dict[int, type[StewardAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: CursorExpiredError,
    422: BadRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: delta-seconds (what Steward sends) or an HTTP date; None when absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdecimal():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for_status(status: int, headers: Mapping[str, str], content: bytes) -> StewardAPIError:
    """The exception for an error answer. A body that is not a problem (a proxy's HTML page) still gives the
    status's class, with the reason `HTTP_<status>`."""
    body: Any
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = body.get("reason") if isinstance(body.get("reason"), str) else f"HTTP_{status}"
    detail = body.get("detail") if isinstance(body.get("detail"), str) else content[:200].decode(errors="replace")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    request_id = body.get("request_id") or headers.get("X-Request-ID")
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else StewardAPIError)
    return kind(
        status,
        str(reason),
        str(detail),
        request_id=str(request_id) if request_id else None,
        retry_after=parse_retry_after(headers.get("Retry-After")),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
        errors=[item for item in errors or () if isinstance(item, dict)],
    )
