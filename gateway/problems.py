"""RFC 9457 problem+json responses carrying Steward's stable reason codes.

Every 503 and 429 carries `Retry-After` (whole seconds): the value its maker knows (the rate limiter's wait, the
OIDC key set's next fetch), else `RETRY_AFTER_SECONDS`, so a client backs off instead of hammering a dependency
that is down. The OpenAI-shaped errors (`gateway.openai_api.errors`) take theirs from `retry_after`, too.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import grpc
from aiohttp import web

from steward.errors import StewardError, http_status_for

CONTENT_TYPE = "application/problem+json"
# A dependency that is down is usually back within seconds (a restart, a failover): long enough for it, short
# enough that a client's retry is not delayed much once it is.
RETRY_AFTER_SECONDS = 2
_RETRY_STATUSES = frozenset({429, 503})


def retry_after(status: int, headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` with `Retry-After` added when `status` is a 503 or 429 that does not have one yet."""
    if status not in _RETRY_STATUSES or (headers and "Retry-After" in headers):
        return headers
    return {**(headers or {}), "Retry-After": str(RETRY_AFTER_SECONDS)}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # 499 and other non-standard codes
        return "Client Closed Request" if status == 499 else "Error"


def problem(
    status: int,
    reason: str,
    detail: str,
    *,
    instance: str = "",
    extra: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    headers = retry_after(status, headers)
    return web.Response(status=status, text=json.dumps(body), content_type=CONTENT_TYPE, headers=headers)


def from_error(error: StewardError, instance: str, request_id: str) -> web.Response:
    status = 499 if error.code == grpc.StatusCode.CANCELLED else http_status_for(error.code, error.reason)
    extra: dict[str, object] = {"request_id": request_id}
    if error.metadata:
        extra["metadata"] = error.metadata
    return problem(status, error.reason, error.message, instance=instance, extra=extra)


class HttpError(Exception):
    """An HTTP-level failure found by the gateway itself (bad body, bad token, ...)."""

    def __init__(self, status: int, reason: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers
        self.extra: dict[str, object] = {}  # extension members of the problem (RFC 9457 §3.2)
