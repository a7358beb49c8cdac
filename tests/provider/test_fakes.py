"""The fake upstreams, judged by the real SDKs (anthropic 2.x, openai 3.x) as clients.

What the SDKs raise when the upstream misbehaves (observed with anthropic 2.11 / openai 3.52, `max_retries=0`):

| behaviour                  | anthropic                            | openai                       |
|----------------------------|--------------------------------------|------------------------------|
| Cut mid-stream             | httpx2.RemoteProtocolError (raw)     | openai.APIConnectionError    |
| Cut, not streamed          | anthropic.APIConnectionError         | openai.APIConnectionError    |
| Malformed (stream or not)  | json.JSONDecodeError (raw)           | json.JSONDecodeError (raw)   |
| Stall before the response  | anthropic.APITimeoutError            | openai.APITimeoutError       |
| Stall mid-stream           | httpx2.ReadTimeout (raw)             | openai.APITimeoutError       |
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from anthropic.types import TextBlock, ThinkingBlock, ToolUseBlock
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from fakes import Behavior, Cut, Fail, FakeToolCall, FakeUpstream, Malformed, Reply, Stall

ANTHROPIC_KEY = "fake-anthropic-test-key"
OPENAI_KEY = "sk-openai-fake-key"
HI: Any = [{"role": "user", "content": "hi"}]
ANTHROPIC_TOOLS: Any = [
    {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object"}},
    {"name": "list_dir", "description": "List a folder", "input_schema": {"type": "object"}},
]
OPENAI_TOOLS: Any = [
    {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "list_dir", "parameters": {"type": "object"}}},
]
CALLS = [
    FakeToolCall("call_1", "read_file", json.dumps({"path": "/etc/hosts", "lines": [1, 2, 3], "note": "héllo"})),
    FakeToolCall("call_2", "list_dir", json.dumps({"dir": "."})),
]
ARGS = [json.loads(call.arguments) for call in CALLS]

Client = anthropic.AsyncAnthropic | openai.AsyncOpenAI


@pytest.fixture
async def claude(fake_upstream: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key=ANTHROPIC_KEY, base_url=fake_upstream.anthropic_base_url, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def gpt(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake_upstream.openai_base_url, max_retries=0) as client:
        yield client


async def stream_anthropic(client: anthropic.AsyncAnthropic, got: list[str]) -> None:
    async with client.messages.stream(model="claude-fake", max_tokens=64, messages=HI) as stream:
        async for text in stream.text_stream:
            got.append(text)


async def stream_openai(client: openai.AsyncOpenAI, got: list[str]) -> None:
    stream = await client.chat.completions.create(model="gpt-fake", messages=HI, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)


async def whole_anthropic(client: anthropic.AsyncAnthropic, got: list[str]) -> None:
    message = await client.messages.create(model="claude-fake", max_tokens=64, messages=HI)
    got.extend(block.text for block in message.content if isinstance(block, TextBlock))


async def whole_openai(client: openai.AsyncOpenAI, got: list[str]) -> None:
    completion = await client.chat.completions.create(model="gpt-fake", messages=HI)
    got.append(completion.choices[0].message.content or "")


Drive = Callable[[Any, list[str]], Awaitable[None]]
ANTHROPIC_DRIVES = {"stream": stream_anthropic, "whole": whole_anthropic}
OPENAI_DRIVES = {"stream": stream_openai, "whole": whole_openai}


async def drive(
    protocol: str, mode: str, fake: FakeUpstream, behavior: Behavior | None, client_timeout: float | None = None
) -> tuple[list[str], BaseException | None]:
    """Enqueue `behavior` (if any) and run one request with the SDK of `protocol`.

    Returns the text received and what the SDK raised (None: a clean end)."""
    if behavior is not None:
        fake.enqueue(behavior)
    got: list[str] = []
    client: Client
    if protocol == "anthropic":
        client = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, max_retries=0)
        run: Drive = ANTHROPIC_DRIVES[mode]
    else:
        client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)
        run = OPENAI_DRIVES[mode]
    async with client:
        try:
            await run(client.with_options(timeout=client_timeout) if client_timeout else client, got)
        except Exception as err:  # noqa: BLE001 - what the SDK raises is the result
            return got, err
    return got, None


# -- Anthropic -------------------------------------------------------------------------------------------------------


async def test_anthropic_text_stream(fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic) -> None:
    fake_upstream.enqueue(Reply(text="Hello there, streaming world.", input_tokens=12))
    pieces: list[str] = []
    async with claude.messages.stream(model="claude-fake", max_tokens=99, messages=HI) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        message = await stream.get_final_message()
    assert pieces == ["Hello ", "there, ", "streaming ", "world."]
    assert message.model == "claude-fake"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)
    [request] = fake_upstream.requests
    assert (request.protocol, request.path) == ("anthropic", "/v1/messages")
    assert (
        request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}" or request.headers["x-api-key"] == ANTHROPIC_KEY
    )
    assert request.api_key == ANTHROPIC_KEY
    assert request.headers["anthropic-version"]
    assert request.body["model"] == "claude-fake"
    assert request.body["max_tokens"] == 99
    assert request.body["stream"] is True


async def test_anthropic_text_whole(fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model="claude-fake", max_tokens=5, messages=HI)
    assert [block.text for block in message.content if isinstance(block, TextBlock)] == [Reply().text]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 10
    assert message.usage.output_tokens == 5  # one per word-ish piece
    assert fake_upstream.requests[0].body.get("stream") in (None, False)


async def test_anthropic_thinking_text_and_tool_calls_stream(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.enqueue(
        Reply(
            text="Let me look.",
            reasoning="The user wants files.",
            tool_calls=CALLS,
            cache_read_input_tokens=300,
            cache_write_input_tokens=40,
            output_tokens=77,
        )
    )
    json_deltas = 0
    async with claude.messages.stream(model="claude-fake", max_tokens=64, messages=HI, tools=ANTHROPIC_TOOLS) as stream:
        async for event in stream:
            json_deltas += event.type == "input_json"
        message = await stream.get_final_message()
    thinking, text, *tools = message.content
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "The user wants files."
    assert thinking.signature
    assert isinstance(text, TextBlock)
    assert text.text == "Let me look."
    assert all(isinstance(block, ToolUseBlock) for block in tools)
    assert [(b.id, b.name, b.input) for b in tools if isinstance(b, ToolUseBlock)] == [
        ("call_1", "read_file", ARGS[0]),
        ("call_2", "list_dir", ARGS[1]),
    ]
    assert json_deltas > len(CALLS)  # the arguments arrived in several fragments
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (10, 77)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (300, 40)
    body = fake_upstream.requests[0].body
    assert [tool["name"] for tool in body["tools"]] == ["read_file", "list_dir"]


async def test_anthropic_tool_calls_whole(fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic) -> None:
    fake_upstream.enqueue(Reply(text="", tool_calls=CALLS))
    message = await claude.messages.create(model="claude-fake", max_tokens=64, messages=HI, tools=ANTHROPIC_TOOLS)
    assert [(b.name, b.input) for b in message.content if isinstance(b, ToolUseBlock)] == [
        ("read_file", ARGS[0]),
        ("list_dir", ARGS[1]),
    ]
    assert message.stop_reason == "tool_use"


# -- OpenAI ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
async def test_openai_text_stream(fake_upstream: FakeUpstream, gpt: openai.AsyncOpenAI, include_usage: bool) -> None:
    fake_upstream.enqueue(Reply(pieces=["Hel", "lo", " there"], input_tokens=7, cache_read_input_tokens=3))
    stream = await gpt.chat.completions.create(
        model="gpt-fake",
        messages=HI,
        max_completion_tokens=50,
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
    if include_usage:
        assert chunks[-1].choices == []
        [usage] = usages
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 3, 13)
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 3
    else:
        assert usages == []
        assert chunks[-1].choices[0].finish_reason == "stop"
    [request] = fake_upstream.requests
    assert (request.protocol, request.path) == ("openai", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.body["model"] == "gpt-fake"
    assert request.body["max_completion_tokens"] == 50
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": include_usage}


async def test_openai_text_whole(fake_upstream: FakeUpstream, gpt: openai.AsyncOpenAI) -> None:
    completion = await gpt.chat.completions.create(model="gpt-fake", messages=HI)
    assert completion.choices[0].message.content == Reply().text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 5)
    assert completion.model == "gpt-fake"


async def test_openai_tool_calls_stream(fake_upstream: FakeUpstream, gpt: openai.AsyncOpenAI) -> None:
    fake_upstream.enqueue(Reply(text="Looking.", tool_calls=CALLS, reasoning="ignored by OpenAI", output_tokens=21))
    argument_deltas = 0
    async with gpt.chat.completions.stream(
        model="gpt-fake", messages=HI, tools=OPENAI_TOOLS, stream_options={"include_usage": True}
    ) as stream:
        async for event in stream:
            argument_deltas += event.type == "tool_calls.function.arguments.delta"
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Looking."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_1", "read_file", ARGS[0]),
        ("call_2", "list_dir", ARGS[1]),
    ]
    assert argument_deltas > len(CALLS)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 21
    assert [tool["function"]["name"] for tool in fake_upstream.requests[0].body["tools"]] == ["read_file", "list_dir"]


async def test_openai_tool_calls_whole(fake_upstream: FakeUpstream, gpt: openai.AsyncOpenAI) -> None:
    fake_upstream.enqueue(Reply(text="", tool_calls=CALLS))
    completion = await gpt.chat.completions.create(model="gpt-fake", messages=HI, tools=OPENAI_TOOLS)
    message = completion.choices[0].message
    assert message.content is None
    calls = [c for c in message.tool_calls or [] if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("read_file", ARGS[0]),
        ("list_dir", ARGS[1]),
    ]


async def test_models_list_parses_in_both_sdks(
    fake_upstream: FakeUpstream, gpt: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    assert [model.id async for model in gpt.models.list()] == ["fake-model", "fake-model-mini"]
    assert [model.id async for model in claude.models.list()] == ["fake-model", "fake-model-mini"]
    assert [r.protocol for r in fake_upstream.requests] == ["openai", "anthropic"]


# -- misbehaviour ----------------------------------------------------------------------------------------------------

PROTOCOLS = pytest.mark.parametrize("protocol", ["anthropic", "openai"])
MODES = pytest.mark.parametrize("mode", ["stream", "whole"])


@PROTOCOLS
@MODES
async def test_rate_limit_with_retry_after(fake_upstream: FakeUpstream, protocol: str, mode: str) -> None:
    _, err = await drive(protocol, mode, fake_upstream, Fail(429, retry_after=3, message="slow down"))
    assert isinstance(err, anthropic.RateLimitError | openai.RateLimitError)
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "3"
    assert "slow down" in err.message
    assert len(fake_upstream.requests) == 1  # max_retries=0: the SDK did not retry


@PROTOCOLS
@pytest.mark.parametrize("status", [500, 529])
async def test_server_errors(fake_upstream: FakeUpstream, protocol: str, status: int) -> None:
    _, err = await drive(protocol, "stream", fake_upstream, Fail(status))
    assert isinstance(err, anthropic.InternalServerError | openai.InternalServerError)
    assert err.status_code == status
    if protocol == "anthropic":
        assert isinstance(err.body, dict)
        assert err.body["type"] == "error"
        error_type = "overloaded_error" if status == 529 else "api_error"
        assert err.body["error"] == {"type": error_type, "message": "fake failure"}
        assert isinstance(err, anthropic.OverloadedError) == (status == 529)
    else:
        assert isinstance(err.body, dict)
        assert (err.body["message"], err.body["type"]) == ("fake failure", "server_error")


@PROTOCOLS
@MODES
async def test_stall_before_start_times_out(fake_upstream: FakeUpstream, protocol: str, mode: str) -> None:
    started = time.monotonic()
    _, err = await drive(protocol, mode, fake_upstream, Stall(5.0), client_timeout=0.2)
    assert isinstance(err, anthropic.APITimeoutError | openai.APITimeoutError)
    assert time.monotonic() - started < 2


@PROTOCOLS
async def test_stall_mid_stream(fake_upstream: FakeUpstream, protocol: str) -> None:
    text = "one two three four five"
    got, err = await drive(protocol, "stream", fake_upstream, Stall(5.0, after_chunks=4, then=Reply(text=text)), 0.2)
    assert isinstance(err, anthropic.APITimeoutError | openai.APITimeoutError | httpx2.TimeoutException)
    assert got
    assert "".join(got) != text
    started = time.monotonic()  # a short stall, then the rest of the stream
    got, err = await drive(protocol, "stream", fake_upstream, Stall(0.1, after_chunks=4, then=Reply(text=text)))
    assert err is None
    assert "".join(got) == text
    assert time.monotonic() - started >= 0.1


@PROTOCOLS
async def test_cut_mid_stream(fake_upstream: FakeUpstream, protocol: str) -> None:
    text = "one two three four five six"
    got, err = await drive(protocol, "stream", fake_upstream, Cut(after_chunks=5, then=Reply(text=text)))
    assert err is not None, "a cut stream must not end cleanly"
    assert isinstance(err, anthropic.APIConnectionError | openai.APIConnectionError | httpx2.TransportError)
    assert got
    assert "".join(got) != text


@PROTOCOLS
async def test_cut_whole(fake_upstream: FakeUpstream, protocol: str) -> None:
    _, err = await drive(protocol, "whole", fake_upstream, Cut(after_chunks=0))
    assert isinstance(err, anthropic.APIConnectionError | openai.APIConnectionError)


@PROTOCOLS
@MODES
async def test_malformed(fake_upstream: FakeUpstream, protocol: str, mode: str) -> None:
    got, err = await drive(protocol, mode, fake_upstream, Malformed(after_chunks=4))
    assert isinstance(err, ValueError | anthropic.APIError | openai.APIError)
    assert "".join(got) != Reply().text


async def test_script_is_consumed_in_order_then_default(fake_upstream: FakeUpstream) -> None:
    fake_upstream.default = Reply(text="default")
    fake_upstream.enqueue(Fail(500), Reply(text="second"))
    outcomes = [await drive("openai", "whole", fake_upstream, None) for _ in range(4)]
    assert isinstance(outcomes[0][1], openai.InternalServerError)
    assert [got for got, _ in outcomes[1:]] == [["second"], ["default"], ["default"]]
    assert len(fake_upstream.requests) == 4


async def test_refuses_what_the_real_api_refuses(fake_upstream: FakeUpstream) -> None:
    """No key, or a missing required field: the API's error shape, and the script is not consumed."""
    fake_upstream.enqueue(Reply(text="kept"))
    root = fake_upstream.anthropic_base_url
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        no_max = {"model": "m", "messages": HI}
        async with session.post(f"{root}/v1/messages", json=no_max, headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        async with session.post(f"{root}/v1/chat/completions", json={"model": "m", "messages": HI}) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_api_key"
    assert fake_upstream.requests[0].api_key == "k"
    got, _ = await drive("anthropic", "whole", fake_upstream, None)
    assert got == ["kept"]
