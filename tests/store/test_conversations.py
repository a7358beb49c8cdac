"""Conversations and messages on both backends: exact round trips and pagination."""

from __future__ import annotations

import json

import pytest

from steward.common.v1 import content_pb2 as c
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest


def _block(**kind: object) -> c.ContentBlock:
    return c.ContentBlock(**kind)  # type: ignore[arg-type]


TOOL_ROUND = [
    c.ChatMessage(role=c.ROLE_USER, content=[_block(text=c.TextBlock(text="add 2 notes"))]),
    c.ChatMessage(
        role=c.ROLE_ASSISTANT,
        content=[
            _block(reasoning=c.ReasoningBlock(text="two calls", signature="sig==")),
            _block(text=c.TextBlock(text="Adding them.")),
            _block(
                tool_call=c.ToolCallBlock(id="call_1", name="notes.create", arguments_json='{"n": 9007199254740993}')
            ),
            _block(
                tool_call=c.ToolCallBlock(
                    id="call_2", name="notes.create", arguments_json='{"title": "\\u00e9t\\u00e9"}'
                )
            ),
        ],
    ),
    c.ChatMessage(
        role=c.ROLE_TOOL,
        content=[
            _block(tool_result=c.ToolResultBlock(tool_call_id="call_1", content='{"id": 1}')),
            _block(tool_result=c.ToolResultBlock(tool_call_id="call_2", content="disk full", is_error=True)),
        ],
    ),
]


async def _conversation(store: StoreUnderTest, user: Metadata) -> str:
    reply = await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    return reply.conversation.id


async def test_a_tool_call_round_trip_reads_back_exactly(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id = await _conversation(store, user)
    for message in TOOL_ROUND:
        await store.conversations.AppendMessage(
            pb.AppendMessageRequest(conversation_id=conversation_id, message=message), metadata=user
        )
    listed = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation_id), metadata=user
    )
    assert [m.seq for m in listed.messages] == [1, 2, 3]
    assert [c.ChatMessage(role=m.role, content=m.content) for m in listed.messages] == TOOL_ROUND
    big = json.loads(listed.messages[1].content[2].tool_call.arguments_json)["n"]
    assert big == 9007199254740993  # an integer beyond float precision survives


@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_every_list_pages_through_everything_once(store: StoreUnderTest, page_size: int) -> None:
    user = store.user()
    conversations = [await _conversation(store, user) for _ in range(5)]
    message = c.ChatMessage(role=c.ROLE_USER, content=[_block(text=c.TextBlock(text="hi"))])
    for index in range(5):
        await store.conversations.AppendMessage(
            pb.AppendMessageRequest(conversation_id=conversations[0], message=message), metadata=user
        )
        await store.runs.CreateRun(pb.CreateRunRequest(conversation_id=conversations[index]), metadata=user)

    async def pages(call: object, request: object, field: str) -> list[str]:
        seen: list[str] = []
        while True:
            reply = await call(request, metadata=user)  # type: ignore[operator]
            seen.extend(item.id for item in getattr(reply, field))
            if not reply.next_page_token:
                return seen
            request.page_token = reply.next_page_token  # type: ignore[attr-defined]

    listed = await pages(
        store.conversations.ListConversations, pb.ListConversationsRequest(page_size=page_size), "conversations"
    )
    assert sorted(listed) == sorted(conversations)
    messages = await pages(
        store.conversations.ListMessages,
        pb.ListMessagesRequest(conversation_id=conversations[0], page_size=page_size),
        "messages",
    )
    assert len(messages) == len(set(messages)) == 5
    runs = await pages(store.runs.ListRuns, pb.ListRunsRequest(page_size=page_size), "runs")
    assert len(runs) == len(set(runs)) == 5


async def test_a_page_of_large_messages_stops_short_and_the_next_page_goes_on(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id = await _conversation(store, user)
    texts = [f"{index}" + "x" * 3_000_000 for index in range(3)]  # two of them would not fit one answer
    for text in texts:
        message = c.ChatMessage(role=c.ROLE_USER, content=[_block(text=c.TextBlock(text=text))])
        await store.conversations.AppendMessage(
            pb.AppendMessageRequest(conversation_id=conversation_id, message=message), metadata=user
        )
    pages: list[list[str]] = []
    token = ""
    while True:
        request = pb.ListMessagesRequest(conversation_id=conversation_id, page_size=10, page_token=token)
        page = await store.conversations.ListMessages(request, metadata=user)
        pages.append([message.content[0].text.text[:1] for message in page.messages])
        if not (token := page.next_page_token):
            break
    assert pages == [["0"], ["1"], ["2"]]
