"""A run started in one store call: its conversation created and its lease claimed with it; agents found by name."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.engine import make_url

from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest


def _message(role: content_pb2.Role.ValueType, text: str) -> content_pb2.ChatMessage:
    return content_pb2.ChatMessage(role=role, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))])


def _texts(messages: list[object]) -> list[str]:
    return [message.content[0].text.text for message in messages]  # type: ignore[attr-defined]


async def _reason(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return from_rpc_error(raised.value).reason


async def _agent(store: StoreUnderTest, user: Metadata, name: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent(name=name, system_prompt="You help.", model_route="demo")
    return (await store.agents.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=user)).agent


def _start(agent_id: str = "", request_id: str = "", holder: str = "replica-1") -> pb.CreateRunRequest:
    request = pb.CreateRunRequest(
        agent_id=agent_id,
        request_id=request_id,
        input_message=_message(content_pb2.ROLE_USER, "and now?"),
        claim_holder=holder,
        lease_ttl=Duration(seconds=30) if holder else None,
    )
    request.new_conversation.title = "started at once"
    request.new_conversation.messages.extend(
        [_message(content_pb2.ROLE_USER, "earlier"), _message(content_pb2.ROLE_ASSISTANT, "an earlier answer")]
    )
    return request


async def test_a_run_starts_with_its_conversation_and_its_claim_in_one_call(store: StoreUnderTest) -> None:
    user = store.user()
    agent = await _agent(store, user, "helper")
    created = await store.runs.CreateRun(_start(agent.id), metadata=user)
    run = created.run
    assert not created.existed
    assert (run.state, run.lease_epoch, run.agent_id) == (run_pb2.RUN_STATE_RUNNING, 1, agent.id)
    assert created.agent == agent  # the runtime starts the run with it: no second read
    conversation = (
        await store.conversations.GetConversation(pb.GetConversationRequest(id=run.conversation_id), metadata=user)
    ).conversation
    assert (conversation.title, conversation.agent_id) == ("started at once", agent.id)
    listed = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=run.conversation_id), metadata=user
    )
    assert _texts(list(listed.messages)) == ["earlier", "an earlier answer", "and now?"]
    assert [message.seq for message in listed.messages] == [1, 2, 3]
    assert created.input_message.id == listed.messages[2].id
    # The lease is live: nobody else claims the run, and the holder's epoch writes.
    claim = pb.ClaimRunRequest(id=run.id, holder="replica-2", lease_ttl=Duration(seconds=30))
    assert await _reason(store.runs.ClaimRun(claim, metadata=user)) == "RUN_STATE_CONFLICT"
    step = pb.CheckpointRunRequest(run_id=run.id, lease_epoch=1, events=[ev.RunEvent(run_started=ev.RunStarted())])
    assert (await store.runs.CheckpointRun(step, metadata=user)).last_event_seq == 1


async def test_a_duplicate_start_returns_the_first_run_unclaimed_again_and_makes_no_second_conversation(
    store: StoreUnderTest,
) -> None:
    user = store.user()
    first = await store.runs.CreateRun(_start(request_id="start-1"), metadata=user)
    again = await store.runs.CreateRun(_start(request_id="start-1", holder="replica-2"), metadata=user)
    assert again.existed
    assert again.run.id == first.run.id
    assert again.run.conversation_id == first.run.conversation_id
    assert (again.run.lease_epoch, again.run.state) == (1, run_pb2.RUN_STATE_RUNNING)
    assert again.input_message.id == first.input_message.id
    conversations = await store.conversations.ListConversations(pb.ListConversationsRequest(), metadata=user)
    assert [c.id for c in conversations.conversations] == [first.run.conversation_id]


async def test_a_run_started_unclaimed_is_queued(store: StoreUnderTest) -> None:
    user = store.user()
    created = await store.runs.CreateRun(_start(holder=""), metadata=user)
    assert (created.run.state, created.run.lease_epoch) == (run_pb2.RUN_STATE_QUEUED, 0)


async def test_bad_starts_are_refused_and_change_nothing(store: StoreUnderTest) -> None:
    user = store.user()
    both = _start()
    both.conversation_id = "5b0cbb52-33a8-4f8b-9d39-3bb2a1d4e7a1"
    assert await _reason(store.runs.CreateRun(both, metadata=user)) == "INVALID_ARGUMENT"
    no_ttl = _start()
    no_ttl.ClearField("lease_ttl")
    assert await _reason(store.runs.CreateRun(no_ttl, metadata=user)) == "INVALID_ARGUMENT"
    bad_message = _start()
    bad_message.new_conversation.messages.append(content_pb2.ChatMessage(role=content_pb2.ROLE_USER))
    assert await _reason(store.runs.CreateRun(bad_message, metadata=user)) == "INVALID_ARGUMENT"
    foreign = _start(agent_id=(await _agent(store, store.user(), "theirs")).id)
    assert await _reason(store.runs.CreateRun(foreign, metadata=user)) == "AGENT_NOT_FOUND"
    conversations = await store.conversations.ListConversations(pb.ListConversationsRequest(), metadata=user)
    assert list(conversations.conversations) == []
    assert list((await store.runs.ListRuns(pb.ListRunsRequest(), metadata=user)).runs) == []


async def test_an_agent_is_found_by_its_name_and_only_by_its_owner(store: StoreUnderTest) -> None:
    alice, bob = store.user(), store.user()
    mine = await _agent(store, alice, "notes-helper")
    await _agent(store, bob, "bobs-agent")
    found = await store.agents.GetAgent(pb.GetAgentRequest(name="notes-helper"), metadata=alice)
    assert found.agent.id == mine.id
    for name in ("bobs-agent", "nobody", "Not A Valid Name!", "x" * 300):
        assert await _reason(store.agents.GetAgent(pb.GetAgentRequest(name=name), metadata=alice)) == "AGENT_NOT_FOUND"
    assert await _reason(store.agents.GetAgent(pb.GetAgentRequest(), metadata=alice)) == "INVALID_ARGUMENT"


async def test_reads_go_on_while_another_connection_holds_the_write_lock(store: StoreUnderTest) -> None:
    """ORM reads take no write lock on SQLite (db/engine.py): they answer at once while a writer holds it."""
    if store.backend != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    user = store.user()
    agent = await _agent(store, user, "reader")
    created = await store.runs.CreateRun(_start(agent.id, holder=""), metadata=user)
    path = make_url(store.database_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held until the reads are done
        reads: list[Awaitable[Any]] = [
            store.agents.GetAgent(pb.GetAgentRequest(name="reader"), metadata=user),
            store.agents.GetAgent(pb.GetAgentRequest(id=agent.id), metadata=user),
            store.agents.ListAgents(pb.ListAgentsRequest(), metadata=user),
            store.runs.GetRun(pb.GetRunRequest(id=created.run.id), metadata=user),
            store.conversations.GetConversation(
                pb.GetConversationRequest(id=created.run.conversation_id), metadata=user
            ),
        ]
        answers = await asyncio.wait_for(asyncio.gather(*reads), timeout=5)  # the busy timeout is 30 s
        assert answers[0].agent.id == answers[1].agent.id == agent.id
        assert answers[3].run.id == created.run.id
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_run_names_its_agent_by_name_or_takes_its_conversations(store: StoreUnderTest) -> None:
    user = store.user()
    agent = await _agent(store, user, "by-name")
    by_name = _start()
    by_name.agent_name = "by-name"
    created = await store.runs.CreateRun(by_name, metadata=user)
    assert (created.run.agent_id, created.agent.id) == (agent.id, agent.id)
    # A run in an existing conversation, naming no agent, is answered by the conversation's agent.
    more = _message(content_pb2.ROLE_USER, "more")
    conversation = pb.CreateRunRequest(conversation_id=created.run.conversation_id, input_message=more)
    again = await store.runs.CreateRun(conversation, metadata=user)
    assert (again.run.agent_id, again.agent.id) == (agent.id, agent.id)
    # No agent at all: the default agent, and no agent in the answer.
    default = await store.runs.CreateRun(_start(holder=""), metadata=user)
    assert (default.run.agent_id, default.HasField("agent")) == ("", False)
    for name in ("nobody", "theirs"):
        unknown = _start()
        unknown.agent_name = name
        assert await _reason(store.runs.CreateRun(unknown, metadata=user)) == "AGENT_NOT_FOUND"
