"""Answers checked against the OpenAPI document: a check the test suite turns on for every gateway it starts.

With `validate_responses` on (`STEWARD_VALIDATE_RESPONSES=1`), the outermost middleware after the request id
checks each answer of a documented operation (HEAD and OPTIONS aside): its status must be documented for that
operation, a header documented as required must be there and match its schema (`Retry-After` on 503 and 429),
its media type documented for that status, and a JSON body must match the documented schema (`$ref`s resolved
against the document). An event stream is checked by status and media type only: its
events are written while the handler runs. An answer that breaks the document is recorded in `VIOLATIONS`
and replaced by a 500 problem naming what broke, so a test fails where a presenter drifted from the
document, in this process or in a gateway run as a subprocess.

Beside the document, every answer's error text is checked for what it must never show a client
(`gateway.leaks`: addresses, ports, gRPC's status text, tracebacks, file paths): a problem's `detail`, and the
`message` of a JSON body's `error` (OpenAI's shape; a run's error), on any route, documented or not. A leak is
recorded and replaced the same way; the replacement names the kind of leak, not the text.

Off by default: production answers are not checked twice. The document stays the one description of the
answers; presenters cannot drift from it while the suite passes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway import openapi, problems
from gateway.auth.bearer import Handler
from gateway.leaks import Leak, leak

_DOCUMENT_URI = "urn:steward:openapi"
_SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Violation:
    """An answer that does not match the document."""

    method: str
    template: str
    status: int
    problem: str


VIOLATIONS: list[Violation] = []  # every violation this process saw (the test suite asserts it stays empty)
log = structlog.get_logger(__name__)


def _record(violation: Violation) -> None:
    """Keep it for the suite's check, and log it for a process's reader (the chaos suite scans the gateway's log)."""
    VIOLATIONS.append(violation)
    log.error(
        "response_violation",
        method=violation.method,
        template=violation.template,
        status=violation.status,
        problem=violation.problem,
    )


@functools.cache
def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, DRAFT202012.create_resource(openapi.document()))
    return registry


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.cache
def _validator(pointer: tuple[str, ...]) -> Draft202012Validator:
    ref = f"{_DOCUMENT_URI}#/" + "/".join(_escape(token) for token in pointer)
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def _documented(method: str, template: str, status: int) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """The pointer to, and the body of, the documented response (a shared `$ref` followed), or None."""
    responses = openapi.document()["paths"][template][method.lower()]["responses"]
    response = responses.get(str(status))
    pointer: tuple[str, ...] = ("paths", template, method.lower(), "responses", str(status))
    if response is None:
        return None
    if "$ref" in response:
        pointer = tuple(response["$ref"].removeprefix("#/").split("/"))
        response = openapi.document()["components"]["responses"][pointer[-1]]
    return pointer, response


def check(method: str, template: str, response: web.StreamResponse) -> str | None:
    """What in `response` breaks the document for the operation (METHOD, path template), or None."""
    found = _documented(method, template, response.status)
    if found is None:
        return f"status {response.status} is not documented"
    pointer, documented = found
    missing = _headers_problem(pointer, documented, response)
    if missing is not None:
        return missing
    content: dict[str, Any] = documented.get("content", {})
    media = (response.content_type or "") if response.status != 204 else ""
    if not content:
        body = response.body if isinstance(response, web.Response) else None
        return None if not body else f"a {response.status} answer is documented without a body"
    if media not in content:
        return f"media type {media or '(none)'} is not documented for status {response.status}"
    if media == "text/event-stream" or not isinstance(response, web.Response) or "json" not in media:
        return None
    raw = response.body
    if not isinstance(raw, bytes | bytearray):
        return "the JSON body is not in memory to check"
    try:
        body = json.loads(raw)
    except ValueError:
        return "the body is not JSON"
    errors = sorted(_validator((*pointer, "content", media, "schema")).iter_errors(body), key=str)
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path)
        return f"body at /{where}: {first.message}"
    return None


def _headers_problem(pointer: tuple[str, ...], documented: dict[str, Any], response: web.StreamResponse) -> str | None:
    """What of the documented headers the answer lacks (a required one) or gets wrong (against its schema)."""
    for name, header in documented.get("headers", {}).items():
        value = response.headers.get(name)
        if value is None:
            if header.get("required"):
                return f"header {name} is required for status {response.status}"
            continue
        if not _validator((*pointer, "headers", name, "schema")).is_valid(value):
            return f"header {name} {value!r} does not match its schema"
    return None


def _template(request: web.Request) -> str | None:
    """The documented path template the request matched, or None (not documented, or no route)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    template = resource.canonical
    if (request.method, template) not in openapi.operations():
        return None
    return template


def error_text_leak(response: web.StreamResponse) -> Leak | None:
    """What a problem's `detail`, or a JSON body's `error.message`, shows that a client must not see, or None."""
    media = response.content_type or ""
    if not isinstance(response, web.Response) or "json" not in media or not isinstance(response.body, bytes):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    texts = [body.get("detail"), error.get("message") if isinstance(error, dict) else None]
    for text in texts:
        found = leak(text) if isinstance(text, str) else None
        if found is not None:
            return found
    return None


@web.middleware
async def response_validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    template = _template(request) if request.method not in _SKIPPED_METHODS else None
    leaked = error_text_leak(response)
    if leaked is not None:
        where = template or request.path
        _record(Violation(request.method, where, response.status, f"the error text shows {leaked}"))
        if response.prepared:
            return response
        # The kind of leak only: its fragment would leak again.
        detail = f"the answer's error text shows {leaked.kind}"
        return problems.problem(500, "INTERNAL", detail, instance=request.path)
    if template is None:
        return response
    problem = check(request.method, template, response)
    if problem is None:
        return response
    _record(Violation(request.method, template, response.status, problem))
    if response.prepared:  # a stream already on the wire: recorded only
        return response
    detail = f"the answer does not match the OpenAPI document ({request.method} {template}): {problem}"
    return problems.problem(500, "INTERNAL", detail, instance=request.path)
