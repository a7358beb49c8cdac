"""Keyset paging in the store: a list read while rows are inserted neither skips nor repeats a row."""

from __future__ import annotations

import itertools

import grpc
import pytest

from steward.common.v1 import content_pb2 as c
from steward.errors import from_rpc_error
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import StoreUnderTest
from tests.support.paging import Page, assert_each_once, read_while_inserting

ROWS = 7
PAGE_SIZE = 2
_MESSAGE = c.ChatMessage(role=c.ROLE_USER, content=[c.ContentBlock(text=c.TextBlock(text="hi"))])


async def test_conversations_newest_first_survive_inserts(store: StoreUnderTest) -> None:
    user = store.user()

    async def create() -> str:
        return (
            await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
        ).conversation.id

    existing = [await create() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListConversationsRequest(page_size=PAGE_SIZE, page_token=token)
        reply = await store.conversations.ListConversations(request, metadata=user)
        return [item.id for item in reply.conversations], reply.next_page_token

    assert_each_once(await read_while_inserting(read, create), existing)


async def test_messages_survive_appends(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation.id

    async def append() -> str:
        request = pb.AppendMessageRequest(conversation_id=conversation_id, message=_MESSAGE)
        return (await store.conversations.AppendMessage(request, metadata=user)).message.id

    existing = [await append() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListMessagesRequest(conversation_id=conversation_id, page_size=PAGE_SIZE, page_token=token)
        reply = await store.conversations.ListMessages(request, metadata=user)
        return [item.id for item in reply.messages], reply.next_page_token

    seen = await read_while_inserting(read, append)
    assert_each_once(seen, existing)
    assert seen[:ROWS] == existing


async def test_runs_newest_first_survive_inserts(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation.id

    async def create() -> str:
        request = pb.CreateRunRequest(conversation_id=conversation_id)
        return (await store.runs.CreateRun(request, metadata=user)).run.id

    existing = [await create() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListRunsRequest(conversation_id=conversation_id, page_size=PAGE_SIZE, page_token=token)
        reply = await store.runs.ListRuns(request, metadata=user)
        return [item.id for item in reply.runs], reply.next_page_token

    assert_each_once(await read_while_inserting(read, create), existing)


async def test_agents_by_name_survive_inserts_that_sort_first(store: StoreUnderTest) -> None:
    user = store.user()
    counter = itertools.count()

    async def create(prefix: str = "m") -> str:
        agent = agent_pb2.Agent(name=f"{prefix}-{next(counter):03d}", system_prompt="Helps.", model_route="smart")
        return (await store.agents.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=user)).agent.id

    existing = [await create() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        reply = await store.agents.ListAgents(
            pb.ListAgentsRequest(page_size=PAGE_SIZE, page_token=token), metadata=user
        )
        return [item.id for item in reply.agents], reply.next_page_token

    assert_each_once(await read_while_inserting(read, lambda: create("a")), existing)


async def test_api_tokens_newest_first_survive_inserts(store: StoreUnderTest) -> None:
    created = await store.identity.CreateUser(pb.CreateUserRequest(display_name="Ada"), metadata=store.service())
    user = store.user(created.user.id)

    async def create() -> str:
        return (await store.identity.CreateApiToken(pb.CreateApiTokenRequest(), metadata=user)).token.id

    existing = [await create() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListApiTokensRequest(page_size=PAGE_SIZE, page_token=token)
        reply = await store.identity.ListApiTokens(request, metadata=user)
        return [item.id for item in reply.tokens], reply.next_page_token

    assert_each_once(await read_while_inserting(read, create), existing)


@pytest.mark.parametrize("garbage", ["", "other-list"])
async def test_a_token_of_another_list_or_garbage_is_refused(store: StoreUnderTest, garbage: str) -> None:
    user = store.user()
    conversation_id = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation.id
    for _ in range(2):
        await store.runs.CreateRun(pb.CreateRunRequest(conversation_id=conversation_id), metadata=user)
    runs = await store.runs.ListRuns(pb.ListRunsRequest(page_size=1), metadata=user)
    token = runs.next_page_token if garbage == "other-list" else "not-a-token"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await store.conversations.ListConversations(pb.ListConversationsRequest(page_token=token), metadata=user)
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason, error.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "page_token",
    )
