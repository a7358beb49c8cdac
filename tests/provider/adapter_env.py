"""Shared pieces of the adapter tests: the adapters against the scripted fake upstream, one call at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from fakes.script import Behavior
from fakes.upstream import FakeUpstream
from services.provider.adapters.anthropic_adapter import AnthropicAdapter
from services.provider.adapters.base import ACCEPTED_KIND, GenerateCall, Upstream, UpstreamError
from services.provider.adapters.openai_adapter import OpenAIAdapter
from steward.common.v1 import content_pb2 as c
from steward.provider.v1 import provider_service_pb2 as pb

Protocol = Literal["anthropic", "openai"]
PROTOCOLS: list[Protocol] = ["anthropic", "openai"]
KEY = "sk-test-SECRET-5f2d9c1e7a"
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
TOOLS = [
    c.ToolSpec(name="notes.create", description="Create a note.", input_schema_json=json.dumps(SCHEMA)),
    c.ToolSpec(name="web.search", description="Search the web.", input_schema_json='{"type": "object"}'),
]
EPHEMERAL = {"type": "ephemeral"}

AnyAdapter = AnthropicAdapter | OpenAIAdapter
Outcome = tuple[list[pb.GenerateResponse], UpstreamError | None]


def text(value: str) -> c.ContentBlock:
    return c.ContentBlock(text=c.TextBlock(text=value))


def user(value: str) -> c.ChatMessage:
    return c.ChatMessage(role=c.ROLE_USER, content=[text(value)])


def simple_call() -> GenerateCall:
    return GenerateCall(model="test-model", messages=[user("Hi there")], tools=list(TOOLS))


async def run(adapter: AnyAdapter, upstream: Upstream, call: GenerateCall) -> Outcome:
    """The events yielded after the ACCEPTED marker, and the UpstreamError that ended the stream (None: it ended
    well)."""
    events: list[pb.GenerateResponse] = []
    error: UpstreamError | None = None
    try:
        async for event in adapter.stream(upstream, KEY, call):
            events.append(event)
    except UpstreamError as raised:
        error = raised
    assert error is None or KEY not in f"{error.message} {error} {error!r}"
    if events:  # an accepted request is announced first, and once
        assert kinds(events).count(ACCEPTED_KIND) == 1
        assert events[0] == pb.GenerateResponse(attempt_started=pb.AttemptStarted())
    return events[1:], error


@dataclass
class Env:
    """The fake upstream and the adapters made for one test (closed after it)."""

    fake: FakeUpstream
    made: list[AnyAdapter] = field(default_factory=list)

    def adapter(self, protocol: Protocol, read_timeout: float = 120.0) -> AnyAdapter:
        self.made.append((AnthropicAdapter if protocol == "anthropic" else OpenAIAdapter)(read_timeout=read_timeout))
        return self.made[-1]

    def upstream(self, protocol: Protocol) -> Upstream:
        base_url = self.fake.anthropic_base_url if protocol == "anthropic" else self.fake.openai_base_url
        return Upstream(provider=f"fake-{protocol}", protocol=protocol, base_url=base_url)

    async def call(self, protocol: Protocol, call: GenerateCall | None = None) -> Outcome:
        return await run(self.adapter(protocol), self.upstream(protocol), call or simple_call())

    async def scripted(self, protocol: Protocol, behavior: Behavior, read_timeout: float = 120.0) -> Outcome:
        """One stream() call against one behaviour; the fake must see exactly one request (no SDK retries)."""
        self.fake.enqueue(behavior)
        outcome = await run(self.adapter(protocol, read_timeout), self.upstream(protocol), simple_call())
        assert len(self.fake.requests) == 1
        assert self.fake.requests[0].api_key == KEY
        return outcome


def tool_index(event: pb.GenerateResponse) -> int:
    kind = str(event.WhichOneof("event"))
    return int(getattr(event, kind).index) if kind.startswith("tool_call") else -1


def kinds(events: list[pb.GenerateResponse]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


def texts(events: list[pb.GenerateResponse]) -> str:
    return "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
