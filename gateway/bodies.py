"""Reading and checking JSON request bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.problems import HttpError
from steward.common.v1 import content_pb2, limits_pb2
from steward.store.v1 import agent_pb2

JSON_BODY: web.RequestKey[dict[str, Any]] = web.RequestKey("json_body", dict)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 415 for another content type, 400 for bad JSON. Parsed once per request
    (request validation reads it before the handler)."""
    if JSON_BODY in request:
        return request[JSON_BODY]
    if not request.body_exists:
        return {}
    if request.content_type != "application/json":
        raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise HttpError(400, "MALFORMED_JSON", "the body nests too deeply") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "MALFORMED_JSON", "the body must be a JSON object")
    try:  # JSON may escape lone UTF-16 surrogates ("\ud800"), which no UTF-8 text can carry
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise HttpError(400, "MALFORMED_JSON", "the body contains an unpaired UTF-16 surrogate") from exc
    request[JSON_BODY] = body
    return body


MAX_IDEMPOTENCY_KEY = 128


def idempotency_key(request: web.Request) -> str:
    """The `Idempotency-Key` header ("" when absent): printable ASCII of at most 128 characters."""
    value = request.headers.get("Idempotency-Key", "")
    if len(value) > MAX_IDEMPOTENCY_KEY or not (value.isascii() and value.isprintable()):
        raise field_error("Idempotency-Key", f"must be printable ASCII of at most {MAX_IDEMPOTENCY_KEY} characters")
    return value


def field_error(field: str, detail: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", f"{field}: {detail}")


def optional_str(body: dict[str, Any], field: str, max_length: int) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise field_error(field, "must be a string")
    if len(value) > max_length:
        raise field_error(field, f"must be at most {max_length} characters")
    return value


# Helpers shared by the routes that take agents and runs: numbers, lists, run modes and limits.

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_DURATION_SECONDS = 30 * 24 * 3600  # a month: far beyond any sensible run or tool timeout
MAX_TEXT = 200_000
MAX_BLOCKS = 100
MODES = {"interactive": agent_pb2.RUN_MODE_INTERACTIVE, "autonomous": agent_pb2.RUN_MODE_AUTONOMOUS}
# JSON field -> RunLimits field; the durations are given in seconds (a JSON number).
LIMIT_COUNTS = {"max_steps": INT32_MAX, "max_tokens": INT64_MAX, "max_cost_micros": INT64_MAX}
LIMIT_DURATIONS = {
    "timeout_seconds": "timeout",
    "tool_timeout_seconds": "tool_timeout",
    "first_token_timeout_seconds": "first_token_timeout",
}


def page(request: web.Request) -> tuple[int, str]:
    """The `page_size` and `page_token` query parameters."""
    raw = request.query.get("page_size", "0")
    if not raw.isdecimal() or len(raw) > 6:
        raise field_error("page_size", "must be a non-negative integer")
    return int(raw), request.query.get("page_token", "")


def reject_unknown(body: dict[str, Any], known: set[str], where: str = "") -> None:
    """400 for a field the route does not know (a misspelt field would otherwise be silently ignored)."""
    for name in body:
        if name not in known:
            raise field_error(f"{where}{name}", "is not a known field")


def object_field(body: dict[str, Any], field: str) -> dict[str, Any]:
    """A JSON object field; absent or null is {}."""
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise field_error(field, "must be a JSON object")
    return value


def string_list(body: dict[str, Any], field: str, *, max_items: int, max_length: int) -> list[str]:
    """A list of strings; absent or null is []. The services check the strings' content."""
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > max_items:
        raise field_error(field, f"must be a list of at most {max_items} strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > max_length:
            raise field_error(f"{field}[{index}]", f"must be a string of at most {max_length} characters")
    return value


def run_mode(value: object, field: str) -> agent_pb2.RunMode.ValueType:
    """ "interactive" or "autonomous"; null is unspecified (the agent's mode, else interactive)."""
    if value is None:
        return agent_pb2.RUN_MODE_UNSPECIFIED
    if not isinstance(value, str) or value not in MODES:
        raise field_error(field, 'must be "interactive", "autonomous" or null')
    return MODES[value]


def run_limits(value: object, field: str) -> limits_pb2.RunLimits:
    """Limits from {"max_steps": 10, "timeout_seconds": 60, ...}; a null or 0 field takes the next default."""
    if value is None:
        return limits_pb2.RunLimits()
    if not isinstance(value, dict):
        raise field_error(field, "must be a JSON object")
    reject_unknown(value, set(LIMIT_COUNTS) | set(LIMIT_DURATIONS), f"{field}.")
    limits = limits_pb2.RunLimits()
    for name, maximum in LIMIT_COUNTS.items():
        count = value.get(name)
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= maximum:
            raise field_error(f"{field}.{name}", f"must be an integer from 0 to {maximum}")
        setattr(limits, name, count)
    for name, proto_name in LIMIT_DURATIONS.items():
        seconds = value.get(name)
        if seconds is None:
            continue
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_DURATION_SECONDS
        ):
            raise field_error(f"{field}.{name}", f"must be a number of seconds from 0 to {MAX_DURATION_SECONDS}")
        getattr(limits, proto_name).FromMilliseconds(round(seconds * 1000))
    return limits


def input_blocks(body: dict[str, Any], *, required: bool = True) -> list[content_pb2.ContentBlock]:
    """`content`: a string, or a list of {"type": "text", "text": "..."} blocks."""
    content = body.get("content")
    if content is None and not required:
        return []
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise field_error("content", "must be a non-empty string or a non-empty list of blocks")
    if len(content) > MAX_BLOCKS:
        raise field_error("content", f"must have at most {MAX_BLOCKS} blocks")
    blocks = []
    for index, item in enumerate(content):
        if not isinstance(item, dict) or item.get("type") != "text" or not isinstance(item.get("text"), str):
            raise field_error(f"content[{index}]", 'must be {"type": "text", "text": "..."}')
        if not item["text"].strip():
            raise field_error(f"content[{index}].text", "must not be blank")
        if len(item["text"]) > MAX_TEXT:
            raise field_error(f"content[{index}].text", f"must be at most {MAX_TEXT} characters")
        blocks.append(content_pb2.ContentBlock(text=content_pb2.TextBlock(text=item["text"])))
    return blocks
