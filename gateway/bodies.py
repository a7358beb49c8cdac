"""Reading and checking JSON request bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.problems import HttpError


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 415 for another content type, 400 for bad JSON."""
    if not request.body_exists:
        return {}
    if request.content_type != "application/json":
        raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "MALFORMED_JSON", "the body must be a JSON object")
    try:  # JSON may escape lone UTF-16 surrogates ("\ud800"), which no UTF-8 text can carry
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise HttpError(400, "MALFORMED_JSON", "the body contains an unpaired UTF-16 surrogate") from exc
    return body


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
