"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so its SDKs raise the right exception.

`code` carries Steward's stable reason (`INVALID_ARGUMENT`, `RUN_STATE_CONFLICT`, ...), or OpenAI's own code
where the SDKs' users expect one (`model_not_found`). Authentication failures come from the gateway's
middleware before a handler runs, so they stay problem+json (401 all the same: the SDK's AuthenticationError).
A 503 or 429 carries `Retry-After` as a problem does (`gateway.problems.retry_after`); the SDKs honour it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

import grpc
import structlog
from aiohttp import web

from gateway.problems import HttpError, retry_after
from steward.errors import StewardError, http_status_for

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    """A failure to answer in OpenAI's error shape."""

    def __init__(
        self, status: int, code: str, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers

    def body(self) -> dict[str, object]:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def invalid(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, "INVALID_ARGUMENT", f"{param}: {message}", param=param)


def as_openai_error(exc: BaseException) -> OpenAIError:
    """Any failure of a /v1 handler as an OpenAIError."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, StewardError):
        status = 499 if exc.code == grpc.StatusCode.CANCELLED else http_status_for(exc.code, exc.reason)
        return OpenAIError(status, exc.reason, exc.message, param=exc.metadata.get("field"))
    if isinstance(exc, HttpError):
        return OpenAIError(exc.status, exc.reason, exc.detail, headers=exc.headers)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return OpenAIError(413, "TOO_LARGE", "request body is too large")
    if isinstance(exc, web.HTTPException):
        return OpenAIError(exc.status, "BAD_REQUEST", exc.reason)
    log.error("openai_api_unhandled_error", exc_info=exc)
    return OpenAIError(500, "INTERNAL", "internal error")


def error_response(error: OpenAIError) -> web.Response:
    headers = retry_after(error.status, error.headers)
    return web.json_response(error.body(), status=error.status, dumps=json.dumps, headers=headers)


def openai_errors(handler: Handler) -> Handler:
    """Answer every failure of `handler` in OpenAI's error shape (a stream already begun reports its own)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            if isinstance(exc, web.HTTPException) and exc.status < 400:
                raise
            return error_response(as_openai_error(exc))

    return wrapped
