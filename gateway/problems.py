"""RFC 9457 problem+json responses carrying Steward's stable reason codes."""

from __future__ import annotations

import json
from http import HTTPStatus

import grpc
from aiohttp import web

from steward.errors import StewardError, http_status_for

CONTENT_TYPE = "application/problem+json"


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
