"""Reading JSON request bodies, and turning them (checked against the OpenAPI document) into messages."""

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
    # Stays here: the validation middleware checks query parameters and bodies, not headers.
    if len(value) > MAX_IDEMPOTENCY_KEY or not (value.isascii() and value.isprintable()):
        raise field_error("Idempotency-Key", f"must be printable ASCII of at most {MAX_IDEMPOTENCY_KEY} characters")
    return value


def field_error(field: str, detail: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", f"{field}: {detail}")


# Turning checked bodies into messages. The OpenAPI document gives the shapes and the validation middleware
# (`gateway.openapi_validation`) refuses what does not match it before a handler runs, so these only convert.

MODES = {"interactive": agent_pb2.RUN_MODE_INTERACTIVE, "autonomous": agent_pb2.RUN_MODE_AUTONOMOUS}
LIMIT_COUNTS = ("max_steps", "max_tokens", "max_cost_micros")
# JSON field -> RunLimits field; the durations are given in seconds (a JSON number).
LIMIT_DURATIONS = {
    "timeout_seconds": "timeout",
    "tool_timeout_seconds": "tool_timeout",
    "first_token_timeout_seconds": "first_token_timeout",
    "pause_timeout_seconds": "pause_timeout",
}


def page(request: web.Request) -> tuple[int, str]:
    """The `page_size` and `page_token` query parameters."""
    return int(request.query.get("page_size", "0")), request.query.get("page_token", "")


def run_mode(value: str | None) -> agent_pb2.RunMode.ValueType:
    """ "interactive" or "autonomous"; null is unspecified (the agent's mode, else interactive)."""
    return agent_pb2.RUN_MODE_UNSPECIFIED if value is None else MODES[value]


def run_limits(value: dict[str, Any] | None) -> limits_pb2.RunLimits:
    """Limits from {"max_steps": 10, "timeout_seconds": 60, ...}; a null or 0 field takes the next default."""
    limits = limits_pb2.RunLimits()
    given = {name: number for name, number in (value or {}).items() if number is not None}
    for name in LIMIT_COUNTS:
        if name in given:
            setattr(limits, name, given[name])
    for name, proto_name in LIMIT_DURATIONS.items():
        if name in given:
            getattr(limits, proto_name).FromMilliseconds(round(given[name] * 1000))
    return limits


def model_params(value: dict[str, Any] | None) -> agent_pb2.ModelParams:
    """Model parameters from {"temperature": 0.2, "reasoning_effort": "low", ...}; a null field is unset."""
    params = agent_pb2.ModelParams()
    given = {name: item for name, item in (value or {}).items() if item is not None}
    if "temperature" in given:
        params.temperature = float(given["temperature"])
    if "max_output_tokens" in given:
        params.max_output_tokens = given["max_output_tokens"]
    if "reasoning_effort" in given:
        effort = str(given["reasoning_effort"]).upper()
        params.reasoning_effort = agent_pb2.ReasoningEffort.Value(f"REASONING_EFFORT_{effort}")
    if "prompt_caching" in given:
        params.prompt_caching = given["prompt_caching"]
    return params


def input_blocks(content: str | list[dict[str, Any]] | None) -> list[content_pb2.ContentBlock]:
    """`content`: a string, or a list of {"type": "text", "text": "..."} blocks; null is none."""
    if content is None:
        return []
    texts = [content] if isinstance(content, str) else [item["text"] for item in content]
    return [content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text)) for text in texts]
