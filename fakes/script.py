"""What a fake upstream does for one request: the scripted behaviours, and what it recorded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "Behavior",
    "Cut",
    "Fail",
    "FakeToolCall",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
    "argument_fragments",
    "capped_reply",
    "output_tokens",
    "reasoning_pieces",
    "reply_of",
    "text_pieces",
]


@dataclass
class FakeToolCall:
    id: str
    name: str
    arguments: str  # JSON text; streamed in several fragments


@dataclass
class Reply:
    """A successful answer. Streamed or not, as the request asks."""

    text: str = "Hello from the fake upstream."
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    reasoning: str = ""  # Anthropic: a thinking block (with a signature); OpenAI: ignored
    input_tokens: int = 10
    output_tokens: int | None = None  # default: the number of streamed text pieces (+ tool fragments)
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    stop_reason: str | None = None  # default: "tool_use"/"tool_calls" if tool calls else "end_turn"/"stop"
    pieces: list[str] | None = None  # explicit text chunks; default: text split into word-ish pieces
    chunk_delay: float = 0.0  # seconds between streamed chunks
    # Honour the request's max tokens as the real APIs do: a reply longer than the request's `max_tokens` (OpenAI:
    # `max_completion_tokens` or `max_tokens`), counted one token per text piece, is cut to that many pieces, with
    # no tool calls, and stops for max tokens ("max_tokens" / "length"). Off: the reply is sent whole.
    cap_at_max_tokens: bool = False


@dataclass
class Fail:
    """An HTTP error answered before any body, in the protocol's error shape."""

    status: int  # e.g. 429, 500, 529, 400, 401
    retry_after: float | None = None  # sent as `retry-after` (seconds) header
    message: str = "fake failure"


@dataclass
class Stall:
    seconds: float  # sleep this long ...
    after_chunks: int = 0  # ... after sending this many stream chunks (0: before the response starts)
    then: Reply | None = None  # what to stream (default Reply())


@dataclass
class Cut:
    after_chunks: int  # stream this many chunks, then drop the connection abruptly
    then: Reply | None = None


@dataclass
class Malformed:
    after_chunks: int = 0  # after this many good chunks, send a `data:` line that is not JSON, then end
    then: Reply | None = None


@dataclass
class StreamError:
    """After this many good chunks, an error reported inside the 200 stream (as the API does when, say, it is
    overloaded mid-answer), in the protocol's error shape for `status`; then the stream ends."""

    after_chunks: int
    status: int = 529
    message: str = "fake failure inside the stream"
    then: Reply | None = None


Behavior = Reply | Fail | Stall | Cut | Malformed | StreamError


@dataclass
class RecordedRequest:
    protocol: str  # "anthropic" | "openai"
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]  # the parsed JSON body ({} when there was none or it was not a JSON object)

    @property
    def api_key(self) -> str | None:
        """The key the client sent: `x-api-key`, else the `Authorization: Bearer` token."""
        if key := self.headers.get("x-api-key"):
            return key
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


def capped_reply(reply: Reply, protocol: str, body: dict[str, Any]) -> Reply:
    """`reply` as an upstream honouring the request's max tokens sends it (`Reply.cap_at_max_tokens`)."""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if not reply.cap_at_max_tokens or not isinstance(limit, int) or output_tokens(reply) <= limit:
        return reply
    stop = "max_tokens" if protocol == "anthropic" else "length"
    pieces = text_pieces(reply)[:limit]
    return replace(reply, pieces=pieces, tool_calls=[], output_tokens=limit, stop_reason=stop)


def reply_of(behavior: Behavior) -> Reply:
    """The reply a behaviour eventually (partly) sends."""
    if isinstance(behavior, Reply):
        return behavior
    if isinstance(behavior, Fail):
        raise TypeError("a Fail sends no reply")
    return behavior.then if behavior.then is not None else Reply()


_WORDISH = re.compile(r"\S+\s*|\s+")


def text_pieces(reply: Reply) -> list[str]:
    """The text deltas: `pieces` when given, else the text cut after each word's trailing space."""
    if reply.pieces is not None:
        return [piece for piece in reply.pieces if piece]
    return _WORDISH.findall(reply.text)


def reasoning_pieces(reply: Reply) -> list[str]:
    return _WORDISH.findall(reply.reasoning)


def argument_fragments(arguments: str, size: int = 8) -> list[str]:
    """A tool call's JSON arguments cut into fragments of `size` characters (at least one fragment)."""
    if not arguments:
        return ["{}"]
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def output_tokens(reply: Reply) -> int:
    """`reply.output_tokens`, or one per streamed text piece and tool-argument fragment."""
    if reply.output_tokens is not None:
        return reply.output_tokens
    return len(text_pieces(reply)) + sum(len(argument_fragments(call.arguments)) for call in reply.tool_calls)
