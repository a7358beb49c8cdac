"""The OpenAI-compatible API through the official `openai` SDK, against a gateway on a real loopback port.

The stack runs the offline demo model, which calls a tool the user's message names, so client tools
and confirmations run here with no key and no network. Assertions are on structure, ids and finish
reasons, not on the demo model's prose.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gateway.app import create_app
from steward.common.v1 import limits_pb2
from steward.errors import Reason
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.runtime.harness import tools_file
from tests.support.grpc_helpers import principal_metadata
from tests.support.sse import parse_sse
from tests.support.stack import Stack, running_stack, store_user_token

AGENT = "notes-keeper"
ONE_STEP = "one-step"  # an agent whose runs end at a limit after one step
HASTY = "hasty"  # agents whose runs may stay paused for PAUSE_SECONDS (ADR 0018), with and without the notes tools
HASTY_NOTES = "hasty-notes"
PAUSE_SECONDS = 0.8
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class Api:
    """The SDK client, and a plain HTTP session for Steward's own API (runs, confirmations)."""

    sdk: AsyncOpenAI
    http: aiohttp.ClientSession
    base: str
    stack: Stack

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.base + path, params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def events(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """An ended run's whole event log over HTTP SSE: (type, data) of each event."""
        async with self.http.get(f"{self.base}/api/v1/runs/{run_id}/events") as response:
            assert response.status == 200, await response.text()
            text = await response.text()
        return [(event.event, json.loads(event.data)["data"]) for event in parse_sse(text)]

    async def wait_until_not_paused(self, run_id: str, within: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while (run := await self.get(f"/api/v1/runs/{run_id}"))["state"] == "paused":
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return dict(run)


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    directory: Path = tmp_path_factory.mktemp("openai-api")
    runtime = {"tools_file": str(tools_file(directory, directory / "notes.db")), "sweep_interval": 0.5}
    async with running_stack(directory, runtime=runtime) as stack:
        settings = stack.gateway_settings()
        async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
            agent = agent_pb2.Agent(
                name=AGENT,
                system_prompt="You keep notes.",
                model_route="demo",
                tools=["notes.*"],
                approval_policy=agent_pb2.ApprovalPolicy(mode=agent_pb2.RUN_MODE_INTERACTIVE),
            )
            one_step = agent_pb2.Agent(
                name=ONE_STEP, model_route="demo", tools=["time.now"], limits=limits_pb2.RunLimits(max_steps=1)
            )
            pause = limits_pb2.RunLimits()
            pause.pause_timeout.FromMilliseconds(int(PAUSE_SECONDS * 1000))
            hasty = agent_pb2.Agent(name=HASTY, model_route="demo", tools=["time.now"], limits=pause)
            hasty_notes = agent_pb2.Agent(name=HASTY_NOTES, model_route="demo", tools=["notes.*"], limits=pause)
            user = principal_metadata(stack.secret, settings.dev_user_id)
            for each in (agent, one_step, hasty, hasty_notes):
                await store_grpc.AgentServiceStub(channel).CreateAgent(
                    store_pb.CreateAgentRequest(agent=each), metadata=user
                )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {stack.dev_token}"}
        try:
            async with (
                AsyncOpenAI(base_url=f"{base}/v1", api_key=stack.dev_token, max_retries=0) as sdk,
                aiohttp.ClientSession(headers=headers) as http,
            ):
                yield Api(sdk, http, base, stack)
        finally:
            await runner.cleanup()


def run_of(completion_id: str) -> str:
    assert completion_id.startswith("chatcmpl-")
    return completion_id.removeprefix("chatcmpl-")


async def test_models_are_the_agents_and_the_default(api: Api) -> None:
    models = [model async for model in api.sdk.models.list()]
    assert [m.id for m in models] == ["steward", *sorted([AGENT, ONE_STEP, HASTY, HASTY_NOTES])]  # by name
    assert {m.object for m in models} == {"model"}
    assert (await api.sdk.models.retrieve(AGENT)).id == AGENT
    with pytest.raises(openai.NotFoundError) as raised:
        await api.sdk.models.retrieve("no-such-agent")
    assert raised.value.code == "model_not_found"


async def test_unknown_model_and_bad_bodies_are_refused_in_openai_shape(api: Api) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await api.sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as empty:
        await api.sdk.chat.completions.create(model="steward", messages=[])
    assert empty.value.code == "INVALID_ARGUMENT"
    with pytest.raises(openai.BadRequestError):
        await api.sdk.chat.completions.create(
            model="steward", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        )
    with pytest.raises(openai.AuthenticationError):
        async with AsyncOpenAI(base_url=str(api.sdk.base_url), api_key="wrong", max_retries=0) as stranger:
            await stranger.models.list()


async def test_a_completion_answers_in_a_new_conversation_holding_the_history(api: Api) -> None:
    raw = await api.sdk.chat.completions.with_raw_response.create(
        model="steward",
        messages=[
            {"role": "system", "content": "Ignored: the agent's prompt applies."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "What is Steward?"}]},
        ],
    )
    completion = raw.parse()
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert not choice.message.tool_calls
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    run_id = run_of(completion.id)
    assert raw.headers["X-Steward-Run-Id"] == run_id
    conversation_id = raw.headers["X-Steward-Conversation-Id"]
    messages = (await api.get(f"/api/v1/conversations/{conversation_id}/messages"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["run_id"] == run_id
    assert messages[-1]["content"] == [{"type": "text", "text": choice.message.content}]


async def test_streaming_with_usage_ends_with_a_usage_chunk(api: Api) -> None:
    stream = await api.sdk.chat.completions.create(
        model="steward",
        messages=[{"role": "user", "content": "What is Steward?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]  # the SDK stops at `data: [DONE]`
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    *answer, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens > 0
    assert answer[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in answer] == [None] * (len(answer) - 1) + ["stop"]
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    run = await api.get(f"/api/v1/runs/{run_of(last.id)}")
    assert run["state"] == "completed"
    messages = (await api.get(f"/api/v1/conversations/{run['conversation_id']}/messages"))["messages"]
    assert messages[-1]["content"] == [{"type": "text", "text": text}]
    assert run["usage"]["output_tokens"] == last.usage.completion_tokens


async def _streamed(api: Api, **request: Any) -> tuple[str, str, str | None, list[dict[str, Any]]]:
    """(completion id, text, finish reason, tool calls) of a streamed completion; a tool call's pieces (its
    arguments stream as the model writes them) are put together by index, as OpenAI's clients do."""
    stream = await api.sdk.chat.completions.create(stream=True, **request)
    completion_id, text, finish = "", "", None
    calls: dict[int, dict[str, Any]] = {}
    async for chunk in stream:
        completion_id = chunk.id
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "function": {"name": None, "arguments": ""}})
                call["id"] = piece.id or call["id"]
                if piece.function is not None:
                    call["function"]["name"] = piece.function.name or call["function"]["name"]
                    call["function"]["arguments"] += piece.function.arguments or ""
    return completion_id, text, finish, [calls[index] for index in sorted(calls)]


@pytest.mark.parametrize("stream", [False, True])
async def test_client_tools_round_trip_continues_the_same_run(api: Api, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is get_weather in Zürich?"}]
    request = {"model": "steward", "tools": [WEATHER]}
    if stream:
        completion_id, _, finish, calls = await _streamed(api, messages=messages, **request)
        (call,) = calls
        call_id, name, arguments = call["id"], call["function"]["name"], call["function"]["arguments"]
    else:
        completion = await api.sdk.chat.completions.create(messages=messages, **request)  # type: ignore[call-overload]
        completion_id, finish = completion.id, completion.choices[0].finish_reason
        (tool_call,) = completion.choices[0].message.tool_calls or []
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert finish == "tool_calls"
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "in Zürich?"}  # the demo model passes the text after the name
    run_id = run_of(completion_id)
    assert call_id.startswith(f"call_{run_id}_")
    paused = await api.get(f"/api/v1/runs/{run_id}")
    assert (paused["state"], paused["pause_reason"]) == ("paused", "awaiting_client_tool")

    follow_up = [
        *messages,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", **call_fn(name, arguments)}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 °C"},
    ]
    if stream:
        second_id, text, finish, calls = await _streamed(api, messages=follow_up, **request)
        assert calls == []
    else:
        completion = await api.sdk.chat.completions.create(messages=follow_up, **request)  # type: ignore[call-overload]
        second_id, text, finish = (
            completion.id,
            completion.choices[0].message.content or "",
            completion.choices[0].finish_reason,
        )
    assert finish == "stop"
    assert second_id == completion_id  # the same run answered
    assert "Sunny, 21 °C" in text  # the demo model summarizes the tool result it was given
    run = await api.get(f"/api/v1/runs/{run_id}")
    assert run["state"] == "completed"
    runs = (await api.get("/api/v1/runs", conversation_id=run["conversation_id"]))["runs"]
    assert [r["id"] for r in runs] == [run_id]  # no second run was started

    again = await api.sdk.chat.completions.create(messages=follow_up, **request)  # type: ignore[call-overload]
    assert again.id == completion_id  # a repeated follow-up answers the same, changing nothing
    assert again.choices[0].finish_reason == "stop"
    assert (await api.get(f"/api/v1/runs/{run_id}"))["last_event_seq"] == run["last_event_seq"]


def call_fn(name: str, arguments: str) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


async def test_results_for_a_run_that_does_not_wait_are_refused(api: Api) -> None:
    completion = await api.sdk.chat.completions.create(model="steward", messages=[{"role": "user", "content": "Hi"}])
    call_id = f"call_{run_of(completion.id)}_demo_nope"
    messages: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", **call_fn("x", "{}")}]},
        {"role": "tool", "tool_call_id": call_id, "content": "late"},
    ]
    with pytest.raises(openai.ConflictError) as raised:
        await api.sdk.chat.completions.create(model="steward", messages=messages)
    assert raised.value.code == "RUN_STATE_CONFLICT"


async def test_a_write_pauses_for_confirmation_and_a_follow_up_continues_after_the_decision(api: Api) -> None:
    messages: list[Any] = [{"role": "user", "content": "create_note Groceries"}]
    completion = await api.sdk.chat.completions.create(model=AGENT, messages=messages)
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    run_id = run_of(completion.id)
    (confirmation,) = (await api.get("/api/v1/confirmations", run_id=run_id))["confirmations"]
    assert confirmation["tool_name"] == "notes.create_note"
    notice = choice.message.content or ""
    assert confirmation["id"] in notice
    assert f"POST /api/v1/confirmations/{confirmation['id']}/decision" in notice
    assert run_id in notice

    follow_up = [*messages, {"role": "assistant", "content": notice}, {"role": "user", "content": "done"}]
    still = await api.sdk.chat.completions.create(model=AGENT, messages=follow_up)
    assert (still.id, still.choices[0].finish_reason) == (completion.id, "stop")  # undecided: the same notice
    assert confirmation["id"] in (still.choices[0].message.content or "")

    decided = await api.http.post(
        f"{api.base}/api/v1/confirmations/{confirmation['id']}/decision", json={"decision": {"outcome": "approve"}}
    )
    assert decided.status == 200, await decided.text()
    await api.wait_until_not_paused(run_id)
    completion_id, text, finish, calls = await _streamed(api, model=AGENT, messages=follow_up)
    assert (completion_id, finish, calls) == (completion.id, "stop", [])
    assert text
    assert confirmation["id"] not in text  # the rest of the run, not the notice again
    run = await api.get(f"/api/v1/runs/{run_id}")
    assert run["state"] == "completed"
    assert [r["id"] for r in (await api.get("/api/v1/runs", conversation_id=run["conversation_id"]))["runs"]] == [
        run_id
    ]


async def test_tool_results_for_calls_it_did_not_make_run_on_the_history_as_given(api: Api) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "call_elsewhere", "type": "function", **call_fn("get_weather", "{}")}],
        },
        {"role": "tool", "tool_call_id": "call_elsewhere", "content": "Rainy, 4 °C"},
    ]
    raw = await api.sdk.chat.completions.with_raw_response.create(model="steward", messages=messages, tools=[WEATHER])
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop"
    assert "Rainy, 4 °C" in (completion.choices[0].message.content or "")
    stored = (await api.get(f"/api/v1/conversations/{raw.headers['X-Steward-Conversation-Id']}/messages"))["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["content"][0]["name"] == "client.get_weather"


async def test_a_run_ended_by_a_limit_finishes_with_length(api: Api) -> None:
    question = [{"role": "user", "content": "What time is it now?"}]  # the demo model calls time.now
    completion = await api.sdk.chat.completions.create(model=ONE_STEP, messages=question)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason == "length"
    run = await api.get(f"/api/v1/runs/{run_of(completion.id)}")
    assert (run["state"], run["incomplete_reason"]) == ("incomplete", "max_steps")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"n": []}, None), ({"messages": [{"role": {}, "content": "hi"}]}, "messages[0].role")],
)
async def test_bodies_of_the_wrong_types_are_a_400(api: Api, change: dict[str, Any], field: str | None) -> None:
    body = {"model": "steward", "messages": [{"role": "user", "content": "hi"}], **change}
    async with api.http.post(api.base + "/v1/chat/completions", json=body) as response:
        assert response.status == 400, await response.text()
        error = (await response.json())["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    if field is not None:
        assert error["param"] == field


async def test_another_user_cannot_continue_a_paused_run_by_its_tool_call_id(api: Api) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is get_weather in Oslo?"}]
    completion = await api.sdk.chat.completions.create(model="steward", messages=messages, tools=[WEATHER])
    (call,) = completion.choices[0].message.tool_calls or []
    run_id = run_of(completion.id)
    forged = [
        *messages,
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", **call_fn("get_weather", "{}")}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Snow, from someone else"},
    ]
    theirs = await store_user_token(api.stack)
    async with AsyncOpenAI(base_url=str(api.sdk.base_url), api_key=theirs, max_retries=0) as stranger:
        with pytest.raises(openai.NotFoundError):
            await stranger.chat.completions.create(model="steward", messages=forged, tools=[WEATHER])
    run = await api.get(f"/api/v1/runs/{run_id}")
    assert (run["state"], run["pause_reason"]) == ("paused", "awaiting_client_tool")  # untouched


async def test_a_quiet_stream_is_kept_alive_with_comment_pings(api: Api) -> None:
    runner = web.AppRunner(create_app(api.stack.gateway_settings(sse_ping_seconds=0.002)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        body = {"model": "steward", "stream": True, "messages": [{"role": "user", "content": "Tell me a story"}]}
        async with api.http.post(base + "/v1/chat/completions", json=body) as response:
            raw = await response.read()
        assert b": ping\n\n" in raw  # comments between chunks: SSE clients skip them
        assert raw.rstrip().endswith(b"data: [DONE]")
        async with AsyncOpenAI(base_url=f"{base}/v1", api_key=api.stack.dev_token, max_retries=0) as sdk:
            messages: list[Any] = [{"role": "user", "content": "Tell me a story"}]
            stream = await sdk.chat.completions.create(model="steward", messages=messages, stream=True)
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert text.startswith("This is Steward's offline demo model")
    finally:
        await runner.cleanup()


def _assert_expired(run: dict[str, Any], events: list[tuple[str, dict[str, Any]]], waited_for: str) -> None:
    """The run ended expired at its pause's deadline, and its log says so last, with what it waited for."""
    assert (run["state"], run["pause_reason"], run["pause_expire_time"]) == ("expired", None, None)
    assert run["end_time"]
    (paused,) = [data for kind, data in events if kind == "run_paused"]
    assert events[-1] == ("run_expired", {"reason": waited_for, "expire_time": paused["expire_time"]})


async def test_a_run_paused_on_a_client_tool_past_its_deadline_ends_expired(api: Api) -> None:
    # Two runs: one whose agent sets the pause deadline (through the OpenAI API), one whose request does (HTTP).
    messages: list[Any] = [{"role": "user", "content": "What is get_weather in Oslo?"}]
    completion = await api.sdk.chat.completions.create(model=HASTY, messages=messages, tools=[WEATHER])
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = [call.model_dump() for call in choice.message.tool_calls or []]
    conversation = await api.http.post(f"{api.base}/api/v1/conversations", json={})
    body = {
        "conversation_id": (await conversation.json())["id"],
        "content": "What is get_weather in Oslo?",
        "client_tools": [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}],
        "limits": {"pause_timeout_seconds": PAUSE_SECONDS},
    }
    async with api.http.post(f"{api.base}/api/v1/runs", json=body) as created:
        assert created.status == 202, await created.text()
        over_http = (await created.json())["run"]
    assert over_http["limits"]["pause_timeout_seconds"] == PAUSE_SECONDS
    for run_id in (run_of(completion.id), over_http["id"]):
        run = await api.wait_until_not_paused(run_id)
        _assert_expired(run, await api.events(run_id), "awaiting_client_tool")

    # The caller's results come too late: over HTTP a conflict; the OpenAI API answers the run's end, streamed or
    # not, with a note saying why nothing more comes.
    run_id = run_of(completion.id)
    late = {"results": [{"tool_call_id": tool_call["id"].removeprefix(f"call_{run_id}_"), "content": "Rain"}]}
    async with api.http.post(f"{api.base}/api/v1/runs/{run_id}/tool_results", json=late) as refused:
        assert refused.status == 409
        problem = await refused.json()
        assert problem["reason"] == Reason.RUN_STATE_CONFLICT
        assert "expired" in problem["detail"]
    follow_up = [
        *messages,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": tool_call["id"],
                    "type": "function",
                    **call_fn(tool_call["function"]["name"], tool_call["function"]["arguments"]),
                }
            ],
        },
        {"role": "tool", "tool_call_id": tool_call["id"], "content": "Rain"},
    ]
    answer = await api.sdk.chat.completions.create(model=HASTY, messages=follow_up, tools=[WEATHER])
    (choice,) = answer.choices
    assert (answer.id, choice.finish_reason, choice.message.tool_calls) == (completion.id, "stop", None)
    assert "expired" in (choice.message.content or "")
    assert "client tool" in (choice.message.content or "")
    streamed_id, text, finish, calls = await _streamed(api, model=HASTY, messages=follow_up, tools=[WEATHER])
    assert (streamed_id, text, finish, calls) == (completion.id, choice.message.content, "stop", [])


async def test_a_run_paused_on_a_confirmation_past_its_pause_deadline_ends_expired(api: Api) -> None:
    # The run's pause deadline (PAUSE_SECONDS) comes before the confirmation's own expiry (15 minutes): the run
    # expires and its confirmation is cancelled; nothing was written.
    messages: list[Any] = [{"role": "user", "content": "create_note Never"}]
    completion = await api.sdk.chat.completions.create(model=HASTY_NOTES, messages=messages)
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    notice = choice.message.content or ""
    run_id = run_of(completion.id)
    run = await api.wait_until_not_paused(run_id)
    events = await api.events(run_id)
    _assert_expired(run, events, "awaiting_confirmation")
    (confirmation,) = (await api.get("/api/v1/confirmations", run_id=run_id, state="all"))["confirmations"]
    assert confirmation["id"] in notice
    assert confirmation["state"] == "cancelled"
    (requested,) = [data for kind, data in events if kind == "confirmation_requested"]
    assert requested["expire_time"] > events[-1][1]["expire_time"]  # the confirmation would have waited longer

    follow_up = [*messages, {"role": "assistant", "content": notice}, {"role": "user", "content": "done"}]
    answer = await api.sdk.chat.completions.create(model=HASTY_NOTES, messages=follow_up)
    (choice,) = answer.choices
    assert (answer.id, choice.finish_reason) == (completion.id, "stop")
    assert "expired" in (choice.message.content or "")
    assert "decision" in (choice.message.content or "")
    streamed_id, text, finish, calls = await _streamed(api, model=HASTY_NOTES, messages=follow_up)
    assert (streamed_id, text, finish, calls) == (completion.id, choice.message.content, "stop", [])
