"""The OpenAI Chat Completions wire format (`POST /v1/chat/completions`), as the fake upstream speaks it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fakes.script import Fail, Reply, argument_fragments, output_tokens, text_pieces

__all__ = [
    "MODELS",
    "completion",
    "error_body",
    "malformed_chunk",
    "models",
    "request_error",
    "response_headers",
    "stream_chunks",
    "stream_error_chunk",
]

MODELS = ("fake-model", "fake-model-mini")

_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_FINGERPRINT = "fp_fake0000"


def response_headers() -> dict[str, str]:
    return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "1"}


def error_body(fail: Fail) -> dict[str, Any]:
    default = ("server_error", None) if fail.status >= 500 else ("invalid_request_error", None)
    error_type, code = _ERRORS.get(fail.status, default)
    return {"error": {"message": fail.message, "type": error_type, "param": None, "code": code}}


def request_error(headers: dict[str, str], body: Any) -> Fail | None:
    """What the real API would refuse before running the model (the key itself is never checked)."""
    if not headers.get("authorization"):
        return Fail(401, message="You didn't provide an API key. Provide it in an Authorization header (Bearer auth).")
    if not isinstance(body, dict):
        return Fail(400, message="We could not parse the JSON body of your request.")
    for name, kind in (("model", str), ("messages", list)):
        if not isinstance(body.get(name), kind):
            return Fail(400, message=f"Missing required parameter: '{name}'.")
    return None


def _finish_reason(reply: Reply) -> str:
    if reply.stop_reason is not None:
        return reply.stop_reason
    return "tool_calls" if reply.tool_calls else "stop"


def _usage(reply: Reply) -> dict[str, Any]:
    """OpenAI counts cached tokens inside `prompt_tokens`; `Reply.input_tokens` is the uncached part."""
    prompt = reply.input_tokens + reply.cache_read_input_tokens + reply.cache_write_input_tokens
    completion_tokens = output_tokens(reply)
    prompt_details: dict[str, Any] = {"cached_tokens": reply.cache_read_input_tokens, "audio_tokens": 0}
    if reply.cache_write_input_tokens:
        prompt_details["cache_write_tokens"] = reply.cache_write_input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streaming response: a whole `ChatCompletion` (usage always included)."""
    text = "".join(text_pieces(reply))
    msg: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
    if reply.tool_calls:
        msg["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments or "{}"}}
            for call in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": _finish_reason(reply)}],
        "usage": _usage(reply),
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


def _data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def stream_chunks(reply: Reply, model: str, include_usage: bool) -> list[bytes]:
    """The `data:` lines of a streamed completion, one chunk per line, ending with `[DONE]`."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    if include_usage:
        base["usage"] = None  # the API sends an explicit null on every chunk but the last

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data(base | {"choices": [choice]})

    pieces = text_pieces(reply)
    chunks = [chunk({"role": "assistant", "content": "" if pieces else None, "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in pieces]
    for index, call in enumerate(reply.tool_calls):
        first = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [first]}))
        for fragment in argument_fragments(call.arguments):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
    chunks.append(chunk({}, _finish_reason(reply)))
    if include_usage:
        chunks.append(_data(base | {"choices": [], "usage": _usage(reply)}))
    chunks.append(_data("[DONE]"))
    return chunks


def stream_error_chunk(fail: Fail) -> bytes:
    """An error payload inside a 200 stream, as the API sends when it fails mid-answer."""
    return _data(error_body(fail))


def malformed_chunk(next_chunk: bytes | None) -> bytes:
    """A `data:` line that is not JSON (a chunk cut off in the middle)."""
    del next_chunk
    return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": {\n\n'


def models() -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"} for name in MODELS]
    return {"object": "list", "data": data}
