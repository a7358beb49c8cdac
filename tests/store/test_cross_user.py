"""User B gets NOT_FOUND (and sees nothing) for every store RPC on user A's ids.

Every RPC of the store's services must be classified below, either as taking
an id (with the call B makes on A's id) or as taking none (with what B must not
see): a new RPC without a case fails `test_every_rpc_is_classified`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import agent_pb2
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest

TTL = Duration(seconds=60)


@dataclass
class Alice:
    user_id: str
    conversation_id: str
    run_id: str
    epoch: int
    agent_id: str
    token_id: str


async def _alice(store: StoreUnderTest) -> tuple[Alice, Metadata]:
    created = await store.identity.CreateUser(pb.CreateUserRequest(display_name="alice"), metadata=store.service())
    user = store.user(created.user.id)
    conversation = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(title="a"), metadata=user)
    ).conversation
    message = content_pb2.ChatMessage(
        role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="secret"))]
    )
    run = (
        await store.runs.CreateRun(
            pb.CreateRunRequest(conversation_id=conversation.id, input_message=message), metadata=user
        )
    ).run
    claimed = (await store.runs.ClaimRun(pb.ClaimRunRequest(id=run.id, holder="a", lease_ttl=TTL), metadata=user)).run
    agent = (
        await store.agents.CreateAgent(
            pb.CreateAgentRequest(agent=agent_pb2.Agent(name="a", model_route="demo")), metadata=user
        )
    ).agent
    token = (await store.identity.CreateApiToken(pb.CreateApiTokenRequest(label="a"), metadata=user)).token
    return Alice(created.user.id, conversation.id, run.id, claimed.lease_epoch, agent.id, token.id), user


Call = Callable[[StoreUnderTest, Alice, Metadata], Awaitable[Any]]


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


ID_CALLS: dict[str, tuple[Call, str]] = {
    "RevokeApiToken": (
        lambda s, a, b: s.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=a.token_id), metadata=b),
        "TOKEN_NOT_FOUND",
    ),
    "GetAgent": (lambda s, a, b: s.agents.GetAgent(pb.GetAgentRequest(id=a.agent_id), metadata=b), "AGENT_NOT_FOUND"),
    "UpdateAgent": (
        lambda s, a, b: s.agents.UpdateAgent(
            pb.UpdateAgentRequest(agent=agent_pb2.Agent(id=a.agent_id, name="stolen", model_route="demo")), metadata=b
        ),
        "AGENT_NOT_FOUND",
    ),
    "DeleteAgent": (
        lambda s, a, b: s.agents.DeleteAgent(pb.DeleteAgentRequest(id=a.agent_id), metadata=b),
        "AGENT_NOT_FOUND",
    ),
    "GetConversation": (
        lambda s, a, b: s.conversations.GetConversation(pb.GetConversationRequest(id=a.conversation_id), metadata=b),
        "CONVERSATION_NOT_FOUND",
    ),
    "DeleteConversation": (
        lambda s, a, b: s.conversations.DeleteConversation(
            pb.DeleteConversationRequest(id=a.conversation_id), metadata=b
        ),
        "CONVERSATION_NOT_FOUND",
    ),
    "AppendMessage": (
        lambda s, a, b: s.conversations.AppendMessage(
            pb.AppendMessageRequest(
                conversation_id=a.conversation_id,
                message=content_pb2.ChatMessage(
                    role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="x"))]
                ),
            ),
            metadata=b,
        ),
        "CONVERSATION_NOT_FOUND",
    ),
    "ListMessages": (
        lambda s, a, b: s.conversations.ListMessages(
            pb.ListMessagesRequest(conversation_id=a.conversation_id), metadata=b
        ),
        "CONVERSATION_NOT_FOUND",
    ),
    "CreateRun": (
        lambda s, a, b: s.runs.CreateRun(pb.CreateRunRequest(conversation_id=a.conversation_id), metadata=b),
        "CONVERSATION_NOT_FOUND",
    ),
    "GetRun": (lambda s, a, b: s.runs.GetRun(pb.GetRunRequest(id=a.run_id), metadata=b), "RUN_NOT_FOUND"),
    "ClaimRun": (
        lambda s, a, b: s.runs.ClaimRun(pb.ClaimRunRequest(id=a.run_id, holder="b", lease_ttl=TTL), metadata=b),
        "RUN_NOT_FOUND",
    ),
    "HeartbeatRun": (
        lambda s, a, b: s.runs.HeartbeatRun(
            pb.HeartbeatRunRequest(id=a.run_id, lease_epoch=a.epoch, lease_ttl=TTL), metadata=b
        ),
        "RUN_NOT_FOUND",
    ),
    "ReleaseRun": (
        lambda s, a, b: s.runs.ReleaseRun(pb.ReleaseRunRequest(id=a.run_id, lease_epoch=a.epoch), metadata=b),
        "RUN_NOT_FOUND",
    ),
    "AppendRunEvents": (
        lambda s, a, b: s.runs.AppendRunEvents(
            pb.AppendRunEventsRequest(
                run_id=a.run_id, lease_epoch=a.epoch, events=[ev.RunEvent(text_delta=ev.TextDelta(text="x"))]
            ),
            metadata=b,
        ),
        "RUN_NOT_FOUND",
    ),
    "CheckpointRun": (
        lambda s, a, b: s.runs.CheckpointRun(pb.CheckpointRunRequest(run_id=a.run_id, lease_epoch=a.epoch), metadata=b),
        "RUN_NOT_FOUND",
    ),
    "RequestRunCancel": (
        lambda s, a, b: s.runs.RequestRunCancel(pb.RequestRunCancelRequest(id=a.run_id), metadata=b),
        "RUN_NOT_FOUND",
    ),
    "StreamRunEvents": (
        lambda s, a, b: _drain(s.runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=a.run_id), metadata=b)),
        "RUN_NOT_FOUND",
    ),
}

# RPCs that take no id of another user's resource, and why B cannot reach A's data through them.
NO_ID_CALLS = {
    "CreateUser": "service-only; creates a new user",
    "GetUser": "returns the caller",
    "CreateApiToken": "creates a token for the caller",
    "VerifyApiToken": "service-only; takes a secret, not an id",
    "CreateWebSession": "service-only (tests/store/test_web_sessions.py); the token must be the user's own",
    "VerifyWebSession": "service-only; takes a secret, not an id",
    "EndWebSession": "service-only; takes a secret, not an id",
    "ListApiTokens": "lists the caller's tokens (checked below)",
    "CreateAgent": "creates an agent for the caller",
    "ListAgents": "lists the caller's agents (checked below)",
    "CreateConversation": "creates a conversation for the caller",
    "ListConversations": "lists the caller's conversations (checked below)",
    "ListRuns": "lists the caller's runs (checked below, also filtered by A's conversation id)",
    "ClaimRuns": "service-only; claims by lease, not by id",
    "ExpirePausedRuns": "service-only; expires by deadline, not by id (tests/store/test_pause_expiry.py)",
    "ListAgentModelRoutes": "service-only; routes across users, for the operator (tests/store/test_agents.py)",
    "ApplyAgents": "creates or changes the caller's agents, by name",
}


def test_every_rpc_is_classified() -> None:
    methods = {
        m.name
        for name in ("IdentityService", "AgentService", "ConversationService", "RunService")
        for m in pb.DESCRIPTOR.services_by_name[name].methods
    }
    assert set(ID_CALLS) | set(NO_ID_CALLS) == methods
    assert not set(ID_CALLS) & set(NO_ID_CALLS)


@pytest.mark.parametrize("rpc", sorted(ID_CALLS))
async def test_user_b_gets_not_found_on_user_a_ids(store: StoreUnderTest, rpc: str) -> None:
    alice, alice_meta = await _alice(store)
    bob = store.user()
    call, reason = ID_CALLS[rpc]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(store, alice, bob)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(raised.value).reason == reason
    # Nothing of Alice's changed.
    assert (await store.agents.GetAgent(pb.GetAgentRequest(id=alice.agent_id), metadata=alice_meta)).agent.name == "a"
    run = (await store.runs.GetRun(pb.GetRunRequest(id=alice.run_id), metadata=alice_meta)).run
    assert (run.lease_epoch, run.last_event_seq, run.cancel_requested) == (alice.epoch, 0, False)
    messages = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=alice.conversation_id), metadata=alice_meta
    )
    assert [m.content[0].text.text for m in messages.messages] == ["secret"]
    tokens = (await store.identity.ListApiTokens(pb.ListApiTokensRequest(), metadata=alice_meta)).tokens
    assert [t.revoke_time.seconds for t in tokens] == [0]


async def test_user_b_lists_none_of_user_a_resources(store: StoreUnderTest) -> None:
    alice, _ = await _alice(store)
    bob = store.user()
    assert not (await store.conversations.ListConversations(pb.ListConversationsRequest(), metadata=bob)).conversations
    assert not (await store.runs.ListRuns(pb.ListRunsRequest(), metadata=bob)).runs
    assert not (await store.runs.ListRuns(pb.ListRunsRequest(conversation_id=alice.conversation_id), metadata=bob)).runs
    assert not (await store.agents.ListAgents(pb.ListAgentsRequest(), metadata=bob)).agents
    assert not (await store.identity.ListApiTokens(pb.ListApiTokensRequest(), metadata=bob)).tokens
