"""Where a run stands, read from its conversation (the checkpoint).

A step checkpoints the assistant message with its tool calls; every tool
result is then checkpointed as its own tool message as soon as it is known.
So after any pause or crash, the tool calls still owed a result are those of
the last assistant message without a tool result after it.

A claim reads the conversation once (`History`) and then adds what it
checkpoints itself, in the store's order (by seq): the store is not read again
for every step.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from steward.common.v1 import content_pb2
from steward.store.v1 import conversation_pb2


class History:
    """The conversation as one claim of a run knows it, in the store's order."""

    def __init__(self, messages: Iterable[conversation_pb2.Message] = ()) -> None:
        self._seqs: list[int] = []
        self.messages: list[content_pb2.ChatMessage] = []
        self.add(messages)

    def add(self, messages: Iterable[conversation_pb2.Message]) -> None:
        """Add checkpointed messages at their place (replies to parallel checkpoints may come out of order); a
        message already here (a retried checkpoint answers with what it wrote before) is not added twice."""
        for message in messages:
            index = bisect.bisect(self._seqs, message.seq)
            if index and self._seqs[index - 1] == message.seq:
                continue
            self._seqs.insert(index, message.seq)
            self.messages.insert(index, content_pb2.ChatMessage(role=message.role, content=message.content))


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
