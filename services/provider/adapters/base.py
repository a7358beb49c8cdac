"""What every adapter implements, and the errors it raises.

An adapter speaks one wire protocol through the vendor SDK (with the SDK's own
retries turned off: the provider service owns the retry policy) and yields
normalized `GenerateResponse` events: text and reasoning deltas, tool-call
start / argument deltas / finish (keyed by the tool call's index in the
answer), cumulative usage, and one `finished` event with the stop reason.
Attempt bookkeeping (`attempt_started`) is the caller's.

Failures raise `UpstreamError`, classified once here so that the retry policy,
the circuit breaker and the caller never look at SDK exception types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from steward.common.v1 import content_pb2
from steward.provider.v1 import provider_service_pb2 as pb

Protocol_ = Literal["anthropic", "openai"]


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
