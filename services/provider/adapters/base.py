"""What every adapter implements, and the errors it raises.

An adapter speaks one wire protocol through the vendor SDK (with the SDK's own
retries turned off: the provider service owns the retry policy) and yields
normalized `GenerateResponse` events: text and reasoning deltas, tool-call
start / argument deltas / finish (keyed by the tool call's index in the
answer), cumulative usage, and one `finished` event with the stop reason.
Attempt bookkeeping is the caller's: an adapter yields `ACCEPTED` (an empty
`attempt_started`) once the upstream has accepted the request, and the caller
announces the attempt then, so that the announcement's write overlaps the
upstream's time to its first token instead of delaying the request.

Failures raise `UpstreamError`, classified once here so that the retry policy,
the circuit breaker and the caller never look at SDK exception types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from steward.common.v1 import content_pb2
from steward.provider.v1 import provider_service_pb2 as pb

Protocol_ = Literal["anthropic", "openai", "demo"]  # "demo": the built-in offline model (routes.DEMO_PROTOCOL)
ACCEPTED_KIND = "attempt_started"


def accepted() -> pb.GenerateResponse:
    """The marker an adapter yields when the upstream has accepted the request (a 2xx with a stream)."""
    return pb.GenerateResponse(attempt_started=pb.AttemptStarted())


@dataclass(frozen=True)
class Upstream:
    """Where a model is served: the wire protocol and the base URL (None: the vendor's default)."""

    provider: str  # the provider name keys are stored under: "anthropic", "openai", "ollama", ...
    protocol: Protocol_
    base_url: str | None = None
    # True for servers that need no key (a local Ollama, the demo model): a stored key is
    # still used when there is one, and no key is not an error.
    keyless: bool = False


@dataclass(frozen=True)
class GenerateCall:
    """One model call, provider-neutral."""

    model: str
    messages: list[content_pb2.ChatMessage]
    system: str = ""
    tools: list[content_pb2.ToolSpec] = field(default_factory=list)
    max_tokens: int = 1024
    temperature: float | None = None
    stop_sequences: list[str] = field(default_factory=list)
    reasoning_budget_tokens: int = 0
    # Cache the prompt prefix up to and including this many messages (0: no hint).
    cache_prefix_messages: int = 0
    cache_key: str = ""
    # A caching hint was given: cache the tools and the system prompt (and cache_prefix_messages messages).
    prompt_cache: bool = False


class UpstreamError(Exception):
    """A failed upstream call.

    transient: a retry (or a fallback) may succeed (429, 5xx, connection errors, timeouts).
    retry_after: seconds the upstream asked us to wait, if it said so.
    reason: a stable code for logs, metrics and users ("RATE_LIMITED", "SERVER_ERROR",
    "TIMEOUT", "CONNECTION", "AUTHENTICATION", "BAD_REQUEST", "MALFORMED_RESPONSE", "STREAM_CUT").
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"UpstreamError({self.reason!r}, transient={self.transient}, status={self.status})"


class Adapter(Protocol):
    """Streams one call to one upstream with one key."""

    def stream(self, upstream: Upstream, api_key: str, call: GenerateCall) -> AsyncIterator[pb.GenerateResponse]:
        """Normalized events; raises UpstreamError. Never retries by itself."""
        ...


def merge_deltas(events: list[pb.GenerateResponse]) -> list[pb.GenerateResponse]:
    """`events` with each run of adjacent fragments of one thing merged into one event.

    Runs of text deltas, of argument fragments of the same tool call, and of reasoning text (a signature ends a
    run) each become one event; nothing is reordered or dropped. Adapters apply it to the events one read of the
    upstream's stream produced: more than one only when the provider fell behind, and then it sends fewer,
    larger messages exactly when that helps.
    """
    if len(events) < 2:
        return events
    merged: list[pb.GenerateResponse] = [events[0]]
    for event in events[1:]:
        last = merged[-1]
        kind = event.WhichOneof("event")
        if kind == last.WhichOneof("event"):
            if kind == "text_delta":
                last.text_delta.text += event.text_delta.text
                continue
            if kind == "tool_call_arguments_delta" and (
                last.tool_call_arguments_delta.index == event.tool_call_arguments_delta.index
            ):
                last.tool_call_arguments_delta.arguments_json_delta += (
                    event.tool_call_arguments_delta.arguments_json_delta
                )
                continue
            if kind == "reasoning_delta" and not last.reasoning_delta.signature and not event.reasoning_delta.signature:
                last.reasoning_delta.text += event.reasoning_delta.text
                continue
        merged.append(event)
    return merged
