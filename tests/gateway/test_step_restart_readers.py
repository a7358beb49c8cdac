"""A step the runtime restarts, as every reader of the run's log sees it (docs/architecture.md §3: readers drop
that step's partial output): the OpenAI API's non-streamed completion and MCP's chat answer hold the redone step's
text only, as get_run and the conversation's stored message do; a streamed completion cannot take back what it
sent and goes on with the redone text (gateway/openai_api/routes.py `_stream`).

The real services run in this process; the model is the wire-faithful fake OpenAI-compatible upstream (fakes/),
which cuts its first stream after some text: the provider reports the broken stream as a transient error, and the
runtime restarts the step (a `step_restarted` event), whose second attempt answers in full. A model call refused
outright ends the run failed, which MCP's chat answers as an error result.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from fakes.upstream import Cut, Fail, FakeUpstream, Reply
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.mcp_client import MODERN, mcp_client, ok, refused, serving
from tests.support.stack import Stack, running_stack

ROUTE = "flaky"
AGENT = "flaky-agent"
ABANDONED = "Abandoned words that the broken stream sent before it was cut short and never finished."
REDONE = "The redone step answers in full."


@dataclass
class Flaky:
    stack: Stack
    fake: FakeUpstream
    base: str
    http: aiohttp.ClientSession  # as the dev user

    def restart_next_step(self) -> None:
        """The next model call breaks after some text; the one after it (the redone step) answers in full. (Chunks
        10 ms apart, so that the first ones are read before the cut: a transport may drop what it buffered when the
        connection breaks under it, and the provider retries a call that sent nothing by itself.)"""
        self.fake.enqueue(Cut(after_chunks=6, then=Reply(text=ABANDONED, chunk_delay=0.01)), Reply(text=REDONE))

    async def kinds(self, run_id: str) -> list[str]:
        async with grpc.aio.insecure_channel(self.stack.address(self.stack.store)) as channel:
            stream = store_grpc.RunServiceStub(channel).StreamRunEvents(
                store_pb.StreamRunEventsRequest(run_id=run_id),
                metadata=principal_metadata(self.stack.secret, self.stack.gateway_settings().dev_user_id),
            )
            return [str(item.event.WhichOneof("payload")) async for item in stream]


@pytest.fixture(scope="module")
async def flaky(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flaky]:
    directory: Path = tmp_path_factory.mktemp("restart")
    fake = FakeUpstream(default=Reply(text=REDONE))
    await fake.start()
    routes = {
        "upstreams": {"fake-llm": {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True}},
        "routes": {ROUTE: {"description": "the fake upstream", "primary": "fake-llm/fake-model"}},
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
            async with http.post(f"{base}/api/v1/agents", json={"name": AGENT, "model_route": ROUTE}) as created:
                assert created.status == 201, await created.text()
            yield Flaky(stack, fake, base, http)
    finally:
        await fake.stop()


async def _complete(flaky: Flaky, *, stream: bool) -> tuple[str, str]:
    """An OpenAI chat completion with the flaky agent: its content (streamed chunks joined) and run id."""
    body: dict[str, Any] = {"model": AGENT, "messages": [{"role": "user", "content": "Hello"}], "stream": stream}
    async with flaky.http.post(f"{flaky.base}/v1/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        run_id = response.headers["X-Steward-Run-Id"]
        if not stream:
            return (await response.json())["choices"][0]["message"]["content"], run_id
        parts = []
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data: {"):
                for choice in json.loads(text.removeprefix("data: "))["choices"]:
                    parts.append(choice["delta"].get("content") or "")
        return "".join(parts), run_id


async def test_a_completion_holds_only_the_redone_steps_text(flaky: Flaky) -> None:
    flaky.restart_next_step()
    content, run_id = await _complete(flaky, stream=False)
    assert "step_restarted" in await flaky.kinds(run_id)  # the step really was redone
    assert content == REDONE


async def test_a_streamed_completion_goes_on_with_the_redone_text_after_what_it_sent(flaky: Flaky) -> None:
    flaky.restart_next_step()
    content, run_id = await _complete(flaky, stream=True)
    assert "step_restarted" in await flaky.kinds(run_id)
    sent, _, rest = content.partition(REDONE)
    assert rest == ""
    assert sent  # the abandoned text was streamed before the step broke, and cannot be taken back
    assert ABANDONED.startswith(sent)


async def test_mcp_chat_answers_the_redone_text_and_says_the_step_was_redone(flaky: Flaky) -> None:
    notes: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message or "")

    flaky.restart_next_step()
    async with mcp_client(f"{flaky.base}/mcp", flaky.stack.dev_token, MODERN) as client:
        answer = ok(await client.call_tool("chat", {"agent": AGENT, "message": "Hello"}, progress_callback=on_progress))
        run = ok(await client.call_tool("get_run", {"run_id": answer["run_id"]}))
    assert "step_restarted" in await flaky.kinds(answer["run_id"])
    assert (answer["state"], answer["answer"]) == ("completed", REDONE)
    assert run["answer"] == REDONE  # the same as the whole log says
    assert any("redone" in message for message in notes)
    messages = await (
        await flaky.http.get(f"{flaky.base}/api/v1/conversations/{answer['conversation_id']}/messages")
    ).json()
    assert messages["messages"][-1]["content"] == [{"type": "text", "text": REDONE}]


async def test_a_failed_run_is_an_error_result_with_the_runs_reason(flaky: Flaky) -> None:
    flaky.fake.enqueue(Fail(400, message="the fake refuses"))
    async with mcp_client(f"{flaky.base}/mcp", flaky.stack.dev_token, MODERN) as client:
        result = await client.call_tool("chat", {"agent": AGENT, "message": "Hello"})
    reason = refused(result)
    assert isinstance(result.structured_content, dict)
    assert result.structured_content["state"] == "failed"
    assert reason == result.structured_content["error"]["reason"] != ""
