"""Middlewares, outermost first: request id, access log, metrics, errors to problem+json, the public OpenAPI
document, authentication, rate limits, request validation against the document.

Authentication (the dev token and API tokens) lives in `gateway.auth`, metrics in `gateway.metrics`, rate
limits in `gateway.ratelimit`.
"""

from __future__ import annotations

import time
import uuid

import structlog
from aiohttp import web

from gateway import problems
from gateway.auth.bearer import Handler, auth_middleware
from gateway.metrics import metrics_middleware
from gateway.openapi import public_document_middleware
from gateway.openapi_validation import InvalidRequestError, validation_middleware
from gateway.ratelimit import rate_limit_middleware
from steward.errors import StewardError

log = structlog.get_logger(__name__)
access_log = structlog.get_logger("gateway.access")

REQUEST_ID = web.RequestKey("request_id", str)
_MAX_REQUEST_ID = 128


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-ID", "")
    request_id = given if 0 < len(given) <= _MAX_REQUEST_ID and given.isprintable() else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    return response


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        access_log.info(
            "http_request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes problem+json with a stable reason and the request id."""
    try:
        return await handler(request)
    except Exception as exc:
        if isinstance(exc, web.HTTPException) and exc.status < 400:
            raise
        return _problem_for(request, exc)


def _problem_for(request: web.Request, exc: Exception) -> web.Response:
    extra: dict[str, object] = {"request_id": request.get(REQUEST_ID, "")}
    if isinstance(exc, StewardError):
        return problems.from_error(exc, request.path, str(extra["request_id"]))
    status, reason, detail, headers = 500, "INTERNAL", "internal error", None
    if isinstance(exc, problems.HttpError):
        status, reason, detail, headers = exc.status, exc.reason, exc.detail, exc.headers
        extra.update(exc.extra)
        if isinstance(exc, InvalidRequestError):
            extra["metadata"] = exc.metadata
    elif isinstance(exc, web.HTTPNotFound):
        status, reason, detail = 404, "ROUTE_NOT_FOUND", "no such route"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        status, reason, detail = 405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here"
        headers = {"Allow": ", ".join(sorted(exc.allowed_methods))}
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        status, reason, detail = 413, "TOO_LARGE", "request body is too large"
    elif isinstance(exc, web.HTTPException):
        status, reason, detail = exc.status, "BAD_REQUEST", exc.reason
    else:
        log.error("unhandled_error", exc_info=exc)
    return problems.problem(status, reason, detail, instance=request.path, extra=extra, headers=headers)


MIDDLEWARES = [
    request_id_middleware,
    access_log_middleware,
    metrics_middleware,
    error_middleware,
    public_document_middleware,
    auth_middleware,
    rate_limit_middleware,
    validation_middleware,
]
