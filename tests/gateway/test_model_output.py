"""The model's output as a client sees it (ADR 0019), through the gateway, the real services and the wire-faithful
fake upstream (fakes/) speaking both OpenAI's and Anthropic's protocols:

- why the model stopped is on the run and in its log; a stop at a max-tokens limit the agent set ends the run
  incomplete (max_tokens), one at the deployment's cap completes it; the OpenAI SDK sees `finish_reason` "length"
  for both, and only ever OpenAI's finish reasons;
- the agent's model parameters reach the upstream (max tokens, temperature, reasoning effort / thinking budget),
  and the model's reasoning reaches the log;
- a tool call's arguments stream as `text_delta` events with `tool_call` before the call starts, and a client tool
  call's as OpenAI `tool_calls` chunks;
- token counts in event JSON are JSON numbers, as in the run's JSON.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from fakes.upstream import FakeToolCall, FakeUpstream, RecordedRequest, Reply
from services.runtime.agents import AgentSpec, Limits
from services.runtime.run.params import step_params
from steward.client import AsyncClient
from steward.common.v1 import usage_pb2
from steward.store.v1 import agent_pb2
from tests.support.mcp_client import serving
from tests.support.sse import SseEvent, parse_sse
from tests.support.stack import Stack, running_stack

LONG = "one two three four five six seven eight nine ten eleven twelve"
ROUTES = {"openai": "fake-openai/fake-model", "anthropic": "fake-anthropic/fake-model"}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class Model:
    stack: Stack
    fake: FakeUpstream
    base: str
    http: aiohttp.ClientSession  # as the dev user
    sdk: AsyncOpenAI

    async def agent(self, name: str, protocol: str = "openai", **fields: Any) -> str:
        body = {"name": name, "model_route": protocol, **fields}
        async with self.http.post(f"{self.base}/api/v1/agents", json=body) as response:
            assert response.status == 201, await response.text()
            return str((await response.json())["id"])

    async def run(self, agent_id: str, content: str = "Hello") -> tuple[dict[str, Any], list[SseEvent], str]:
        """A run of the agent, read to its end: the run's JSON, its SSE events and the raw SSE text."""
        async with self.http.post(f"{self.base}/api/v1/conversations", json={}) as response:
            conversation = (await response.json())["id"]
        body = {"conversation_id": conversation, "agent_id": agent_id, "content": content}
        async with self.http.post(f"{self.base}/api/v1/runs", json=body) as response:
            assert response.status == 202, await response.text()
            created = await response.json()
        async with self.http.get(self.base + created["events_url"]) as response:
            raw = await response.text()
        async with self.http.get(f"{self.base}/api/v1/runs/{created['run']['id']}") as response:
            return await response.json(), parse_sse(raw), raw

    def model_request(self) -> RecordedRequest:
        return [r for r in self.fake.requests if r.path.endswith(("/messages", "/chat/completions"))][-1]


@pytest.fixture(scope="module")
async def model(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Model]:
    directory: Path = tmp_path_factory.mktemp("model-output")
    fake = FakeUpstream()
    await fake.start()
    routes = {
        "upstreams": {
            "fake-openai": {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True},
            "fake-anthropic": {"protocol": "anthropic", "base_url": fake.anthropic_base_url},
        },
        "routes": {name: {"description": "the fake upstream", "primary": target} for name, target in ROUTES.items()},
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    try:
        async with contextlib.AsyncExitStack() as exits:
            with pytest.MonkeyPatch.context() as env:  # read by the provider's settings at start-up only
                env.setenv("STEWARD_ROUTES_FILE", str(directory / "routes.json"))
                stack = await exits.enter_async_context(running_stack(directory))
            _runner, base = await exits.enter_async_context(serving(stack.gateway_settings()))
            http = await exits.enter_async_context(
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.dev_token}"})
            )
            key = {"provider": "fake-anthropic", "secret": "fake-anthropic-test-key"}
            async with http.post(f"{base}/api/v1/keys", json=key) as response:
                assert response.status in (200, 201), await response.text()
            sdk = await exits.enter_async_context(
                AsyncOpenAI(base_url=f"{base}/v1", api_key=stack.dev_token, max_retries=0)
            )
            yield Model(stack, fake, base, http, sdk)
    finally:
        await fake.stop()


def _data(events: list[SseEvent], kind: str) -> list[dict[str, Any]]:
    return [json.loads(event.data)["data"] for event in events if event.event == kind]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_stop_at_the_agents_max_output_tokens_ends_the_run_incomplete(model: Model, protocol: str) -> None:
    agent = await model.agent(f"terse-{protocol}", protocol, model_params={"max_output_tokens": 4, "temperature": 0.25})
    model.fake.enqueue(Reply(text=LONG, cap_at_max_tokens=True))  # the upstream honours max_tokens, as real ones do
    run, events, raw = await model.run(agent)
    sent = model.model_request().body
    assert sent["max_tokens"] == 4
    assert sent.get("temperature") == (0.25 if protocol == "openai" else None)  # Anthropic's API takes none
    assert (run["state"], run["incomplete_reason"], run["stop_reason"]) == ("incomplete", "max_tokens", "max_tokens")
    assert "".join(delta["text"] for delta in _data(events, "text_delta")) == "one two three four "
    (usage,) = _data(events, "usage")
    assert usage["stop_reason"] == "max_tokens"
    assert _data(events, "run_incomplete") == [{"reason": "max_tokens", "stop_reason": "max_tokens"}]
    # Token counts are numbers in the events, as in the run's JSON.
    assert (usage["usage"]["output_tokens"], usage["run_total"]["output_tokens"]) == (4, 4)
    assert all(isinstance(value, int) for value in [*usage["usage"].values(), *usage["run_total"].values()])
    assert '_tokens": "' not in raw


async def test_the_openai_sdk_sees_only_openai_finish_reasons(model: Model) -> None:
    await model.agent("plain")  # the deployment's default max tokens: a stop at it is no limit of the agent
    await model.agent("capped", model_params={"max_output_tokens": 3})
    question: Any = [{"role": "user", "content": "Tell me everything"}]

    model.fake.enqueue(Reply(text="Cut off in the mid", stop_reason="length"))  # the model hit its cap
    completion = await model.sdk.chat.completions.create(model="plain", messages=question)
    assert completion.choices[0].finish_reason == "length"
    async with model.http.get(f"{model.base}/api/v1/runs/{completion.id.removeprefix('chatcmpl-')}") as response:
        run = await response.json()
    assert (run["state"], run["stop_reason"]) == ("completed", "max_tokens")

    model.fake.enqueue(Reply(text="Cut off in the mid", stop_reason="length"))
    stream = await model.sdk.chat.completions.create(model="plain", messages=question, stream=True)
    reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    assert reasons == [None] * (len(reasons) - 1) + ["length"]

    model.fake.enqueue(Reply(text=LONG, cap_at_max_tokens=True))
    completion = await model.sdk.chat.completions.create(model="capped", messages=question)
    assert completion.choices[0].finish_reason == "length"  # incomplete (max_tokens)

    model.fake.enqueue(Reply(text="I cannot", stop_reason="content_filter"))
    completion = await model.sdk.chat.completions.create(model="plain", messages=question)
    assert completion.choices[0].finish_reason == "content_filter"

    model.fake.enqueue(Reply(text="Fine.", stop_reason="end_of_the_world"))  # not a finish reason OpenAI has
    completion = await model.sdk.chat.completions.create(model="plain", messages=question)
    assert completion.choices[0].finish_reason == "stop"


async def test_tool_argument_deltas_stream_before_the_call_starts(model: Model) -> None:
    agent = await model.agent("calculator", tools=["calc"], model_params={"reasoning_effort": "high"})
    arguments = '{"expression": "2 + 3 * 4"}'
    model.fake.enqueue(
        Reply(text="", tool_calls=[FakeToolCall("call_c", "calc", arguments)], chunk_delay=0.015),
        Reply(text="It is 14."),
    )
    run, events, _raw = await model.run(agent, "What is 2 + 3 * 4?")
    assert model.fake.requests[-2].body["reasoning_effort"] == "high"  # the first step's request
    assert (run["state"], run["stop_reason"]) == ("completed", "end_turn")
    kinds = [event.event for event in events]
    started = kinds.index("tool_call_started")
    pieces = [json.loads(event.data)["data"] for event in events[:started] if event.event == "text_delta"]
    assert len(pieces) >= 2  # the arguments streamed in pieces, 15 ms apart, coalesced within 10 ms
    assert {piece["text"] for piece in pieces} == {""}
    assert {(piece["tool_call"]["tool_call_id"], piece["tool_call"]["tool_name"]) for piece in pieces} == {
        ("call_c", "calc")
    }
    assert "".join(piece["tool_call"]["arguments_json_delta"] for piece in pieces) == arguments
    assert _data(events, "tool_call_started")[0]["arguments_json"] == arguments
    assert not any(event.event == "text_delta" and "tool_call" in event.data for event in events[started:])
    assert [usage["stop_reason"] for usage in _data(events, "usage")] == ["tool_use", "end_turn"]
    assert _data(events, "run_completed")[0]["stop_reason"] == "end_turn"

    # The Python client types them.
    async with AsyncClient(model.base, model.stack.dev_token) as client:
        seen = [event async for event in client.runs.events(run["id"])]
        read = await client.runs.get(run["id"])
    calls = [event.tool_call for event in seen if event.tool_call is not None]
    assert "".join(call.arguments_json_delta for call in calls) == arguments
    assert {(call.tool_call_id, call.tool_name) for call in calls} == {("call_c", "calc")}
    assert "".join(event.text for event in seen) == "It is 14."
    assert [event.stop_reason for event in seen if event.type == "usage"] == ["tool_use", "end_turn"]
    assert read.stop_reason == "end_turn"


async def test_a_client_tool_calls_arguments_stream_as_openai_tool_calls_chunks(model: Model) -> None:
    await model.agent("weatherman")
    arguments = '{"city": "Oslo, Norway"}'
    call = FakeToolCall("call_w", "client__get_weather", arguments)  # "client.get_weather" on the wire
    model.fake.enqueue(Reply(text="", tool_calls=[call], chunk_delay=0.015))
    question: Any = [{"role": "user", "content": "The weather in Oslo?"}]
    stream = await model.sdk.chat.completions.create(
        model="weatherman", messages=question, tools=[WEATHER], stream=True
    )
    chunks = [chunk async for chunk in stream if chunk.choices]
    deltas = [tool for chunk in chunks for tool in chunk.choices[0].delta.tool_calls or []]
    assert len(deltas) >= 2  # streamed in pieces
    assert {tool.index for tool in deltas} == {0}
    assert [tool.id for tool in deltas if tool.id] == [f"call_{chunks[0].id.removeprefix('chatcmpl-')}_call_w"]
    assert [tool.function.name for tool in deltas if tool.function and tool.function.name] == ["get_weather"]
    assert "".join(tool.function.arguments or "" for tool in deltas if tool.function) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_reasoning_effort_asks_for_thinking_and_the_reasoning_reaches_the_log(model: Model) -> None:
    agent = await model.agent("thinker", "anthropic", model_params={"reasoning_effort": "medium"})
    model.fake.enqueue(Reply(text="Yes.", reasoning="First I weigh the question, then I answer it."))
    run, events, _raw = await model.run(agent, "Is it so?")
    sent = model.model_request().body
    assert (sent["max_tokens"], sent["thinking"]) == (4096, {"type": "enabled", "budget_tokens": 2048})
    assert "".join(d["text"] for d in _data(events, "reasoning_delta")) == (
        "First I weigh the question, then I answer it."
    )
    assert (run["state"], run["stop_reason"]) == ("completed", "end_turn")


def test_a_step_is_capped_only_by_a_limit_the_agent_or_run_set() -> None:
    def params(
        max_output: int = 0,
        effort: agent_pb2.ReasoningEffort.ValueType = agent_pb2.REASONING_EFFORT_UNSPECIFIED,
        run_limit: int = 0,
        used: int = 0,
    ) -> tuple[int, bool, int]:
        agent = AgentSpec(
            "a", "", "r", model_params=agent_pb2.ModelParams(max_output_tokens=max_output, reasoning_effort=effort)
        )
        limits = Limits(max_steps=5, max_tokens=run_limit, max_cost_micros=0, timeout=1, tool_timeout=1,
                        first_token_timeout=1)  # fmt: skip
        tuned = step_params(agent, limits, usage_pb2.Usage(input_tokens=used), 4096)
        return tuned.max_tokens, tuned.capped, tuned.reasoning_budget_tokens

    assert params() == (4096, False, 0)  # the deployment default: a stop there completes the run
    assert params(max_output=4096) == (4096, True, 0)  # the agent's own limit, even at the same number
    assert params(run_limit=10_000, used=9_000) == (1000, True, 0)  # what the run's token limit has left
    assert params(run_limit=100_000, used=9_000) == (4096, False, 0)
    assert params(effort=agent_pb2.REASONING_EFFORT_LOW) == (4096, False, 1024)
    assert params(effort=agent_pb2.REASONING_EFFORT_HIGH) == (4096, False, 3072)
    assert params(max_output=1000, effort=agent_pb2.REASONING_EFFORT_HIGH) == (1000, True, 0)  # too small to think
