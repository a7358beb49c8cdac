"""A run started in one runtime call: the agent found by name, the conversation created and the run claimed in one
store transaction; through the real store, provider (demo model), confirm service and runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, world


@pytest.fixture(scope="module")
async def notes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("run-start")) as running:
        yield running


def _text(text: str, role: content_pb2.Role.ValueType = content_pb2.ROLE_USER) -> content_pb2.ChatMessage:
    return content_pb2.ChatMessage(role=role, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))])


def _start(text: str, **fields: object) -> runtime_pb.CreateRunRequest:
    request = runtime_pb.CreateRunRequest(input=_text(text).content, **fields)  # type: ignore[arg-type]
    request.new_conversation.title = "one call"
    request.new_conversation.messages.extend([_text("earlier"), _text("an earlier answer", content_pb2.ROLE_ASSISTANT)])
    return request


async def _reason(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return from_rpc_error(raised.value).reason


async def _run_count(world: World) -> int:
    return len((await world.runs.ListRuns(store_pb.ListRunsRequest(page_size=500), metadata=world.user)).runs)


async def test_a_run_names_its_agent_and_gets_a_new_conversation_in_one_call(notes: World) -> None:
    agent = (await notes.agents.GetAgent(store_pb.GetAgentRequest(id=notes.agent_id), metadata=notes.user)).agent
    created = await notes.runtime.CreateRun(_start("Please list_notes", agent_name=agent.name), metadata=notes.user)
    ended = await notes.wait(created.run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert ended.agent_id == agent.id
    assert ended.lease_epoch == 1  # the claim made with the run drove it to the end: nobody claimed it again
    texts = [m.content[0].text.text for m in await notes.messages(ended) if m.content[0].HasField("text")]
    assert texts[:3] == ["earlier", "an earlier answer", "Please list_notes"]
    kinds = await notes.events(ended.id)
    assert (kinds[0], kinds[-1]) == ("run_started", "run_completed")
    assert "tool_call_finished" in kinds  # the agent's own tools: its spec came with the create


async def test_the_name_steward_is_the_default_agent_unless_the_user_has_one_of_that_name(notes: World) -> None:
    created = await notes.runtime.CreateRun(_start("hello", agent_name="steward"), metadata=notes.user)
    ended = await notes.wait(created.run.id)
    assert (ended.state, ended.agent_id) == (run_pb2.RUN_STATE_COMPLETED, "")


async def test_unknown_agents_and_bad_requests_are_refused_and_create_nothing(notes: World) -> None:
    before = await _run_count(notes)
    for name in ("nobody-has-this", "Not A Name"):
        request = _start("hello", agent_name=name)
        assert await _reason(notes.runtime.CreateRun(request, metadata=notes.user)) == "AGENT_NOT_FOUND"
    both = _start("hello", conversation_id="5b0cbb52-33a8-4f8b-9d39-3bb2a1d4e7a1")
    assert await _reason(notes.runtime.CreateRun(both, metadata=notes.user)) == "INVALID_ARGUMENT"
    neither = runtime_pb.CreateRunRequest(input=_text("hello").content)
    assert await _reason(notes.runtime.CreateRun(neither, metadata=notes.user)) == "INVALID_ARGUMENT"
    assert await _run_count(notes) == before


async def test_the_stores_refusal_reaches_the_caller_with_its_code_reason_and_domain(notes: World) -> None:
    """The runtime's channel to the store raises the store's error as `StewardError`; it travels on unchanged."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await notes.runtime.CreateRun(_start("hello", agent_name="nobody-has-this"), metadata=notes.user)
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason, error.domain) == (grpc.StatusCode.NOT_FOUND, "AGENT_NOT_FOUND", "store.steward")


async def test_a_replica_with_no_free_slot_leaves_the_run_queued_for_a_sweep(tmp_path: Path) -> None:
    async with world(tmp_path, max_active_runs=0) as full:
        created = await full.runtime.CreateRun(_start("hello", agent_name="steward"), metadata=full.user)
        assert (created.run.state, created.run.lease_epoch) == (run_pb2.RUN_STATE_QUEUED, 0)
        run = await full.run(created.run.id)
        assert (run.state, run.lease_epoch) == (run_pb2.RUN_STATE_QUEUED, 0)


async def test_runs_that_found_the_replica_full_start_as_soon_as_a_slot_frees(tmp_path: Path) -> None:
    """Not at the next sweep (30 s here): a run that ends while others wait lets the sweep claim them at once."""
    async with world(tmp_path, max_active_runs=1, sweep_interval=30.0) as one_slot:
        texts = [f"Please list_notes, run {index}" for index in range(3)]  # a tool call, then the answer
        created = [
            await one_slot.runtime.CreateRun(_start(text, agent_name="steward"), metadata=one_slot.user)
            for text in texts
        ]
        assert [c.run.state for c in created][1:] == [run_pb2.RUN_STATE_QUEUED] * 2  # the replica was full
        ended = [await one_slot.wait(c.run.id, within=10.0) for c in created]
    assert [run.state for run in ended] == [run_pb2.RUN_STATE_COMPLETED] * 3
