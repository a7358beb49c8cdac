"""The real provider adapters (vendor SDKs, retries off) against the scripted fake upstream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Literal

import pytest

from fakes.script import Behavior, Cut, Fail, FakeToolCall, Malformed, Reply, Stall
from fakes.upstream import FakeUpstream
from services.provider.adapters import openai_adapter
from services.provider.adapters.anthropic_adapter import AnthropicAdapter
from services.provider.adapters.anthropic_adapter import sdk_errors as anthropic_sdk_errors
from services.provider.adapters.base import GenerateCall, Upstream, UpstreamError
from services.provider.adapters.errors import classify, retry_after_seconds
from services.provider.adapters.names import ToolNames, decode_tool_name, encode_tool_name
from services.provider.adapters.openai_adapter import ChunkTranslator, OpenAIAdapter
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
    """The events yielded, and the UpstreamError that ended the stream (None: it ended well)."""
    events: list[pb.GenerateResponse] = []
    error: UpstreamError | None = None
    try:
        async for event in adapter.stream(upstream, KEY, call):
            events.append(event)
    except UpstreamError as raised:
        error = raised
    assert error is None or KEY not in f"{error.message} {error} {error!r}"
    return events, error


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


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[Env]:
    env = Env(fake_upstream)
    yield env
    for adapter in env.made:
        await adapter.aclose()


def tool_index(event: pb.GenerateResponse) -> int:
    kind = str(event.WhichOneof("event"))
    return int(getattr(event, kind).index) if kind.startswith("tool_call") else -1


def kinds(events: list[pb.GenerateResponse]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


def texts(events: list[pb.GenerateResponse]) -> str:
    return "".join(e.text_delta.text for e in events if e.HasField("text_delta"))


# -- streams ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_stream(env: Env, protocol: Protocol) -> None:
    answer = "Hello there, this is a streamed answer."
    reply = Reply(text=answer, input_tokens=12, output_tokens=7, cache_read_input_tokens=30)
    await env.adapter(protocol).warm_up()  # the SDK is imported at first use, or beforehand in a thread
    events, error = await env.scripted(protocol, reply)
    assert error is None
    assert texts(events) == answer
    assert kinds(events).count("text_delta") > 1
    assert events[-1].finished.stop_reason == pb.STOP_REASON_END_TURN
    final = [e.usage for e in events if e.HasField("usage")][-1]
    assert (final.input_tokens, final.output_tokens, final.cache_read_input_tokens, final.cost_micros) == (12, 7, 30, 0)
    assert env.fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    body = env.fake.requests[0].body  # no system prompt and no cache hint in the call: none in the request
    assert "cache_control" not in json.dumps(body)
    assert not {"system", "prompt_cache_key"} & body.keys()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_calls(env: Env, protocol: Protocol) -> None:
    first = {"title": "Groceries", "body": "milk, eggs and a long list of other things", "n": 3}
    second = {"q": "weather in Zürich"}
    calls = [
        FakeToolCall("call_a", encode_tool_name("notes.create"), json.dumps(first)),
        FakeToolCall("call_b", encode_tool_name("web.search"), json.dumps(second, ensure_ascii=False)),
    ]
    events, error = await env.scripted(protocol, Reply(text="On it.", tool_calls=calls))
    assert error is None
    started = [e.tool_call_started for e in events if e.HasField("tool_call_started")]
    assert [(s.index, s.id, s.name) for s in started] == [(0, "call_a", "notes.create"), (1, "call_b", "web.search")]
    for index, expected in ((0, first), (1, second)):
        mine = [e for e in events if tool_index(e) == index]
        opened, *middle, closed = kinds(mine)
        assert (opened, closed) == ("tool_call_started", "tool_call_finished")
        assert set(middle) == {"tool_call_arguments_delta"}
        assert len(middle) > 1
        assert json.loads("".join(e.tool_call_arguments_delta.arguments_json_delta for e in mine)) == expected
    assert texts(events) == "On it."
    assert events[-1].finished.stop_reason == pb.STOP_REASON_TOOL_USE


@pytest.mark.parametrize(
    ("protocol", "stop", "expected"),
    [
        ("anthropic", "max_tokens", pb.STOP_REASON_MAX_TOKENS),
        ("openai", "length", pb.STOP_REASON_MAX_TOKENS),
        ("anthropic", "refusal", pb.STOP_REASON_CONTENT_FILTER),
        ("openai", "content_filter", pb.STOP_REASON_CONTENT_FILTER),
    ],
)
async def test_stop_reasons(env: Env, protocol: Protocol, stop: str, expected: pb.StopReason.ValueType) -> None:
    events, _ = await env.scripted(protocol, Reply(text="cut", stop_reason=stop))
    assert events[-1].finished.stop_reason == expected


async def test_anthropic_reasoning(env: Env) -> None:
    env.fake.enqueue(Reply(text="Yes.", reasoning="First I consider the question carefully."))
    call = GenerateCall(model="test-model", messages=[user("Hm?")], max_tokens=4096, reasoning_budget_tokens=2048)
    events, _ = await env.call("anthropic", call)
    reasoning = [e.reasoning_delta for e in events if e.HasField("reasoning_delta")]
    assert "".join(r.text for r in reasoning) == "First I consider the question carefully."
    assert any(r.signature for r in reasoning)
    assert env.fake.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


# -- request translation --------------------------------------------------------------------------------------------


def round_trip_call() -> GenerateCall:
    """A whole tool-call round: the assistant calls two tools, one result is an error, the user speaks again."""
    assistant = c.ChatMessage(
        role=c.ROLE_ASSISTANT,
        content=[
            c.ContentBlock(reasoning=c.ReasoningBlock(text="I should make a note.", signature="sig-123")),
            c.ContentBlock(reasoning=c.ReasoningBlock(text="unsigned thoughts are dropped")),
            text("Creating it."),
            c.ContentBlock(tool_call=c.ToolCallBlock(id="call_1", name="notes.create", arguments_json='{"n": 1}')),
            c.ContentBlock(tool_call=c.ToolCallBlock(id="call_2", name="web.search", arguments_json='{"q": "x"}')),
        ],
    )
    results = c.ChatMessage(
        role=c.ROLE_TOOL,
        content=[
            c.ContentBlock(tool_result=c.ToolResultBlock(tool_call_id="call_1", content='{"id": 7}')),
            c.ContentBlock(tool_result=c.ToolResultBlock(tool_call_id="call_2", content="offline", is_error=True)),
        ],
    )
    messages = [user("Make a shopping note."), assistant, results, user("Thanks!")]
    call = GenerateCall("test-model", messages, system="You are Steward.", tools=list(TOOLS), max_tokens=321)
    return replace(call, temperature=0.2, stop_sequences=["STOP"], cache_prefix_messages=2, cache_key="agent-42")


async def test_anthropic_request(env: Env) -> None:
    await env.call("anthropic", round_trip_call())
    (request,) = env.fake.requests
    body = request.body
    assert request.path == "/v1/messages"
    assert (body["model"], body["max_tokens"], body["stop_sequences"]) == ("test-model", 321, ["STOP"])
    assert not {"temperature", "thinking"} & body.keys()  # API version 2026-10-21 has no sampling parameters
    assert body["system"] == [{"type": "text", "text": "You are Steward.", "cache_control": EPHEMERAL}]
    assert body["tools"] == [
        {"name": "notes__create", "description": "Create a note.", "input_schema": SCHEMA},
        {"name": "web__search", "description": "Search the web.", "input_schema": {"type": "object"}},
    ]
    # The cache breakpoint: the last block of message index cache_prefix_messages - 1.
    cached_call = {"type": "tool_use", "id": "call_2", "name": "web__search", "input": {"q": "x"}}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Make a shopping note."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should make a note.", "signature": "sig-123"},
                {"type": "text", "text": "Creating it."},
                {"type": "tool_use", "id": "call_1", "name": "notes__create", "input": {"n": 1}},
                cached_call | {"cache_control": EPHEMERAL},
            ],
        },
        {
            "role": "user",  # the tool results and the next user turn, merged (results first)
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"id": 7}'},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "offline", "is_error": True},
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ]


OPENAI_MESSAGES = [
    {"role": "system", "content": "You are Steward."},
    {"role": "user", "content": "Make a shopping note."},
    {
        "role": "assistant",
        "content": "Creating it.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "notes__create", "arguments": '{"n": 1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "web__search", "arguments": '{"q": "x"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"id": 7}'},
    {"role": "tool", "tool_call_id": "call_2", "content": "ERROR: offline"},
    {"role": "user", "content": "Thanks!"},
]


async def test_openai_compatible_request(env: Env) -> None:
    """A base URL means an OpenAI-compatible server: `max_tokens`, and no prompt_cache_key."""
    await env.call("openai", round_trip_call())
    (request,) = env.fake.requests
    body = request.body
    assert request.path == "/v1/chat/completions"
    assert body["messages"] == OPENAI_MESSAGES
    assert not {"max_completion_tokens", "prompt_cache_key"} & body.keys()
    assert [body["max_tokens"], body["temperature"], body["stop"], body["stream"]] == [321, 0.2, ["STOP"], True]
    assert body["stream_options"] == {"include_usage": True}
    assert [t["type"] for t in body["tools"]] == ["function", "function"]
    assert [t["function"] for t in body["tools"]] == [
        {"name": "notes__create", "parameters": SCHEMA, "description": "Create a note."},
        {"name": "web__search", "parameters": {"type": "object"}, "description": "Search the web."},
    ]


async def test_openai_official_request(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """No base URL means OpenAI itself: `max_completion_tokens` and prompt_cache_key (the fake stands in for it)."""
    monkeypatch.setattr(openai_adapter, "DEFAULT_BASE_URL", env.fake.openai_base_url)
    await run(env.adapter("openai"), Upstream(provider="openai", protocol="openai"), round_trip_call())
    body = env.fake.requests[0].body
    assert body["max_completion_tokens"] == 321
    assert "max_tokens" not in body
    assert body["prompt_cache_key"] == "agent-42"
    assert body["messages"] == OPENAI_MESSAGES


# -- failures --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "case",
    [
        (Fail(429, retry_after=2, message=f"slow down, {KEY}"), "RATE_LIMITED", True, 2.0),
        (Fail(529), "RATE_LIMITED", True, None),
        (Fail(500, message=f"boom for {KEY}"), "SERVER_ERROR", True, None),
        (Fail(503, retry_after=1.5), "SERVER_ERROR", True, 1.5),
        (Fail(401, message=f"invalid x-api-key {KEY}"), "AUTHENTICATION", False, None),
        (Fail(403), "AUTHENTICATION", False, None),
        (Fail(400, message=f"bad request {KEY}"), "BAD_REQUEST", False, None),
        (Fail(404, message="model: not-a-model"), "BAD_REQUEST", False, None),
    ],
    ids=lambda case: str(case[0].status),
)
async def test_http_failures(env: Env, protocol: Protocol, case: tuple[Fail, str, bool, float | None]) -> None:
    fail, reason, transient, retry_after = case
    events, error = await env.scripted(protocol, fail)
    assert events == []
    assert error is not None
    assert (error.reason, error.transient) == (reason, transient)
    assert (error.retry_after, error.status) == (retry_after, fail.status)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("after_chunks", [0, 3])
async def test_stall_times_out(env: Env, protocol: Protocol, after_chunks: int) -> None:
    began = time.monotonic()
    events, error = await env.scripted(protocol, Stall(seconds=5, after_chunks=after_chunks), read_timeout=0.5)
    assert time.monotonic() - began < 3
    assert error is not None
    assert (error.reason, error.transient) == ("TIMEOUT", True)
    assert "finished" not in kinds(events)
    assert bool(events) == (after_chunks > 0), "what came before the stall was yielded"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("behavior", [Cut(2), Cut(4, then=Reply(text="one two three four")), Malformed(2)], ids=repr)
async def test_broken_stream(env: Env, protocol: Protocol, behavior: Behavior) -> None:
    events, error = await env.scripted(protocol, behavior)
    assert events, "the events before the break were yielded"
    assert "finished" not in kinds(events)
    assert error is not None
    assert error.transient
    expected = {"MALFORMED_RESPONSE", "STREAM_CUT"} if isinstance(behavior, Malformed) else {"STREAM_CUT", "CONNECTION"}
    assert error.reason in expected
    if isinstance(behavior, Cut) and behavior.after_chunks == 4:
        assert texts(events).startswith("one ")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connection_refused(env: Env, protocol: Protocol) -> None:
    fake = FakeUpstream()
    await fake.start()
    upstream = Env(fake).upstream(protocol)
    await fake.stop()  # nothing listens on that port any more
    _, error = await run(env.adapter(protocol), upstream, simple_call())
    assert error is not None
    assert (error.reason, error.transient) == ("CONNECTION", True)


# -- pieces ----------------------------------------------------------------------------------------------------------


def test_tool_names_round_trip() -> None:
    qualified = ["notes.create", "a.b", "a__b", "ünï.cödé", "x." + "y" * 80]
    names = ToolNames(qualified)
    wires = [names.wire(name) for name in qualified]
    assert wires[0] == "notes__create"
    assert len(set(wires)) == len(wires), "distinct tools keep distinct wire names"
    assert all(1 <= len(w) <= 64 and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in w) for w in wires)
    assert [names.name(wire) for wire in wires] == qualified
    assert decode_tool_name("other__tool") == names.name("other__tool") == "other.tool"


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, now=now) == pytest.approx(10.0)
    assert retry_after_seconds({"retry-after": "Tue, 14 Nov 2020 22:13:30 GMT"}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_error_event_inside_anthropic_stream() -> None:
    """An `error` event in a 200 stream arrives as a status error with status 200; its body names the cause."""
    import anthropic
    import httpx2

    response = httpx2.Response(200, request=httpx2.Request("POST", "http://upstream/v1/messages"))
    for error_type, reason, transient in (
        ("overloaded_error", "RATE_LIMITED", True),
        ("api_error", "SERVER_ERROR", True),
        ("invalid_request_error", "BAD_REQUEST", False),
    ):
        body = {"type": "error", "error": {"type": error_type, "message": f"key {KEY}"}}
        exc = anthropic.APIStatusError(f"{body}", response=response, body=body)
        error = classify(exc, anthropic_sdk_errors(), api_key=KEY, streaming=True)
        assert error is not None
        assert (error.reason, error.transient) == (reason, transient)
        assert KEY not in error.message
    assert classify(KeyError("a bug of ours"), anthropic_sdk_errors(), api_key=KEY, streaming=True) is None


def test_openai_stream_without_finish_reason_is_cut() -> None:
    with pytest.raises(UpstreamError) as raised:
        ChunkTranslator(ToolNames([])).finish()
    assert (raised.value.reason, raised.value.transient) == ("STREAM_CUT", True)
