"""The real provider adapters (vendor SDKs, retries off) against the scripted fake upstream: streams and requests.

Failures are in test_adapter_failures.py; the shared set-up in adapter_env.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fakes.script import FakeToolCall, Reply
from services.provider.adapters import openai_adapter
from services.provider.adapters.base import GenerateCall, Upstream
from services.provider.adapters.names import encode_tool_name
from steward.common.v1 import content_pb2 as c
from steward.provider.v1 import provider_service_pb2 as pb
from tests.provider.adapter_env import (
    EPHEMERAL,
    KEY,
    PROTOCOLS,
    SCHEMA,
    TOOLS,
    Env,
    Protocol,
    kinds,
    run,
    text,
    texts,
    tool_index,
    user,
)

# -- streams ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_stream(env: Env, protocol: Protocol) -> None:
    answer = "Hello there, this is a streamed answer."
    # Chunks 5 ms apart arrive one per read, so each piece is its own delta (a burst may be merged: see below).
    reply = Reply(text=answer, input_tokens=12, output_tokens=7, cache_read_input_tokens=30, chunk_delay=0.005)
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
    events, error = await env.scripted(protocol, Reply(text="On it.", tool_calls=calls, chunk_delay=0.005))
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


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_burst_arrives_whole_in_fewer_deltas(env: Env, protocol: Protocol) -> None:
    # Sent without pauses, many chunks land in one read: their deltas may be merged, never lost or reordered.
    pieces = [f"piece{index} " for index in range(200)]
    calls = [FakeToolCall("call_a", "lookup", json.dumps({"q": "x" * 500}))]
    events, error = await env.scripted(protocol, Reply(pieces=pieces, tool_calls=calls))
    assert error is None
    assert texts(events) == "".join(pieces)
    assert 1 <= kinds(events).count("text_delta") <= len(pieces)
    arguments = "".join(e.tool_call_arguments_delta.arguments_json_delta for e in events if tool_index(e) == 0)
    assert json.loads(arguments) == {"q": "x" * 500}
    assert kinds(events)[-1] == "finished"


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
        {
            "name": "web__search",
            "description": "Search the web.",
            "input_schema": {"type": "object"},
            "cache_control": EPHEMERAL,  # the tools and the system prompt are a cached prefix of their own
        },
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


def _final_usage(events: list[pb.GenerateResponse]) -> tuple[int, int]:
    final = [e.usage for e in events if e.HasField("usage")][-1]
    return final.cache_read_input_tokens, final.cache_write_input_tokens


async def test_a_caching_hint_caches_the_tools_and_system_prompt(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint alone (no cached messages) marks the tools and the system prompt; the fake's prompt cache then
    reports a write and, for the same prefix again, a read of as many tokens. OpenAI (itself: the key is sent only
    there) reports reads and never writes. Without the hint nothing is marked and nothing is cached."""
    monkeypatch.setattr(openai_adapter, "DEFAULT_BASE_URL", env.fake.openai_base_url)
    hinted = GenerateCall(
        "test-model", [user("Hi")], system="You are Steward.", tools=list(TOOLS), prompt_cache=True, cache_key="a-1"
    )
    upstreams: dict[Protocol, Upstream] = {
        "anthropic": env.upstream("anthropic"),
        "openai": Upstream(provider="openai", protocol="openai"),
    }
    uses = {}
    for protocol, upstream in upstreams.items():
        first, _ = await run(env.adapter(protocol), upstream, hinted)
        second, _ = await run(env.adapter(protocol), upstream, replace(hinted, messages=[user("Another question")]))
        unhinted, _ = await run(env.adapter(protocol), upstream, replace(hinted, prompt_cache=False, cache_key=""))
        uses[protocol] = [_final_usage(first), _final_usage(second), _final_usage(unhinted)]
    anthropic_body = env.fake.requests[0].body
    assert anthropic_body["system"][0]["cache_control"] == EPHEMERAL
    assert anthropic_body["tools"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in json.dumps(anthropic_body["messages"])
    assert "cache_control" not in json.dumps(env.fake.requests[2].body)
    (written, read) = (uses["anthropic"][0][1], uses["anthropic"][1][0])
    assert written > 0
    assert uses["anthropic"] == [(0, written), (read, 0), (0, 0)]
    assert read == written
    assert uses["openai"][0] == (0, 0)  # the first request fills the cache, for free
    assert uses["openai"][1][0] > 0
    assert uses["openai"][1][1] == 0
    assert uses["openai"][2] == (0, 0)
    assert "prompt_cache_key" not in env.fake.requests[5].body
