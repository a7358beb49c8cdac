"""The Anthropic Messages API wire format (`POST /v1/messages`), as the fake upstream speaks it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fakes.script import (
    Fail,
    Reply,
    argument_fragments,
    output_tokens,
    reasoning_pieces,
    text_pieces,
)

__all__ = [
    "error_body",
    "malformed_chunk",
    "message",
    "models",
    "request_error",
    "response_headers",
    "stream_chunks",
    "stream_error_chunk",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def response_headers() -> dict[str, str]:
    return {"request-id": _new_id("req")}


def error_body(fail: Fail) -> dict[str, Any]:
    default = "api_error" if fail.status >= 500 else "invalid_request_error"
    error_type = _ERROR_TYPES.get(fail.status, default)
    return {"type": "error", "error": {"type": error_type, "message": fail.message}, "request_id": _new_id("req")}


def request_error(headers: dict[str, str], body: Any) -> Fail | None:
    """What the real API would refuse before running the model (the key itself is never checked)."""
    if not headers.get("x-api-key") and not headers.get("authorization"):
        return Fail(401, message="x-api-key header is required")
    if not headers.get("anthropic-version"):
        return Fail(400, message="anthropic-version: header is required")
    if not isinstance(body, dict):
        return Fail(400, message="The request body is not valid JSON.")
    for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
        if not isinstance(body.get(name), kind):
            return Fail(400, message=f"{name}: Field required")
    return None


def _stop_reason(reply: Reply) -> str:
    if reply.stop_reason is not None:
        return reply.stop_reason
    return "tool_use" if reply.tool_calls else "end_turn"


def _usage(reply: Reply, output: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_write_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "output_tokens": output,
    }


def _signature(reasoning: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, reasoning).hex + "=="


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def message(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streaming response: a whole `Message`."""
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning, "signature": _signature(reply.reasoning)})
    text = "".join(text_pieces(reply))
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call.arguments)})
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(reply, output_tokens(reply)),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    chunks = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    for delta in deltas:
        chunks.append(_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    chunks.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return chunks


def stream_chunks(reply: Reply, model: str) -> list[bytes]:
    """The server-sent events of a streamed `Message`, one chunk per event, in the order the API sends them."""
    total = output_tokens(reply)
    start = message(reply, model) | {"content": [], "stop_reason": None, "usage": _usage(reply, min(1, total))}
    chunks = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("ping", {"type": "ping"}),
    ]
    index = 0
    if reply.reasoning:
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in reasoning_pieces(reply)]
        deltas.append({"type": "signature_delta", "signature": _signature(reply.reasoning)})
        chunks += _block(index, {"type": "thinking", "thinking": "", "signature": ""}, deltas)
        index += 1
    pieces = text_pieces(reply)
    if pieces:
        chunks += _block(index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces])
        index += 1
    for call in reply.tool_calls:
        fragments = ["", *argument_fragments(call.arguments)]  # the API's first fragment is often empty
        deltas = [{"type": "input_json_delta", "partial_json": fragment} for fragment in fragments]
        chunks += _block(index, {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, deltas)
        index += 1
    delta = {"stop_reason": _stop_reason(reply), "stop_sequence": None}
    chunks.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(reply, total)}))
    chunks.append(_event("message_stop", {"type": "message_stop"}))
    return chunks


def stream_error_chunk(fail: Fail) -> bytes:
    """An `error` event inside a 200 stream, as the API sends when it fails mid-answer."""
    return f"event: error\ndata: {json.dumps(error_body(fail))}\n\n".encode()


def malformed_chunk(next_chunk: bytes | None) -> bytes:
    """An event whose `data:` is not JSON. It is named like the event it replaces: the SDK skips unnamed events."""
    name = "content_block_delta"
    if next_chunk is not None and next_chunk.startswith(b"event: "):
        name = next_chunk.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
    return f'event: {name}\ndata: {{"type": "{name}", "index": 0, "delta": {{\n\n'.encode()


def models(names: tuple[str, ...]) -> dict[str, Any]:
    """`GET /v1/models` in the Anthropic shape (asked for with an `anthropic-version` header)."""
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": name.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }
        for name in names
    ]
    first, last = (names[0], names[-1]) if names else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}
