"""Where a run stands, read from its conversation (the checkpoint).

A step checkpoints the assistant message with its tool calls; every tool
result is then checkpointed as its own tool message as soon as it is known.
So after any pause or crash, the tool calls still owed a result are those of
the last assistant message without a tool result after it.

A claim reads the conversation once and then adds what it checkpoints itself,
in the order of its writes, which is the store's order (writer.py): the store
is not read again for every step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from steward.common.v1 import content_pb2
from steward.store.v1 import conversation_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc

HISTORY_PAGE_SIZE = 1000


def chat_messages(messages: Iterable[conversation_pb2.Message]) -> list[content_pb2.ChatMessage]:
    """The conversation's stored messages as the model sees them (role and content)."""
    return [content_pb2.ChatMessage(role=message.role, content=message.content) for message in messages]


async def read_history(
    conversations: store_grpc.ConversationServiceAsyncStub, conversation_id: str
) -> list[content_pb2.ChatMessage]:
    """The conversation's messages as the model sees them, read from the store page by page."""
    messages: list[conversation_pb2.Message] = []
    token = ""
    while True:
        page = await conversations.ListMessages(
            store_pb.ListMessagesRequest(conversation_id=conversation_id, page_size=HISTORY_PAGE_SIZE, page_token=token)
        )
        messages.extend(page.messages)
        if not page.next_page_token:
            return chat_messages(messages)
        token = page.next_page_token


@dataclass(frozen=True)
class Pending:
    calls: list[content_pb2.ToolCallBlock]  # the last assistant message's calls still without a result
    answered: int  # how many of its calls have a result


def tool_calls(message: content_pb2.ChatMessage) -> list[content_pb2.ToolCallBlock]:
    return [block.tool_call for block in message.content if block.WhichOneof("block") == "tool_call"]


def pending_calls(history: list[content_pb2.ChatMessage]) -> Pending:
    """The tool calls of the last assistant message that have no result yet."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].role != content_pb2.ROLE_ASSISTANT:
            continue
        calls = tool_calls(history[index])
        answered = {
            block.tool_result.tool_call_id
            for message in history[index + 1 :]
            for block in message.content
            if block.WhichOneof("block") == "tool_result"
        }
        return Pending([call for call in calls if call.id not in answered], len(answered))
    return Pending([], 0)


def result_message(call_id: str, content: str, *, is_error: bool) -> content_pb2.ChatMessage:
    block = content_pb2.ToolResultBlock(tool_call_id=call_id, content=content, is_error=is_error)
    return content_pb2.ChatMessage(role=content_pb2.ROLE_TOOL, content=[content_pb2.ContentBlock(tool_result=block)])
