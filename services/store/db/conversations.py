"""Conversations and messages, always scoped by the owner."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db import convert
from services.store.db.agents import require_agent
from services.store.db.models import ConversationRow, MessageRow
from services.store.db.runner import TransactionRunner
from steward import paging, timeutil
from steward.common.v1 import content_pb2
from steward.errors import not_found
from steward.store.v1 import conversation_pb2


async def lock_conversation(session: AsyncSession, owner_id: str, conversation_id: str) -> ConversationRow:
    """The owner's conversation, locked for update; NOT_FOUND otherwise."""
    row = await session.scalar(
        select(ConversationRow)
        .where(ConversationRow.id == conversation_id, ConversationRow.owner_id == owner_id)
        .with_for_update()
    )
    if row is None:
        raise not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} not found")
    return row


async def append_message(
    session: AsyncSession,
    conversation: ConversationRow,
    message: content_pb2.ChatMessage,
    *,
    run_id: str = "",
    request_id: str | None = None,
) -> MessageRow:
    """Append a message at the conversation's next seq (the conversation row is locked)."""
    created = timeutil.now()
    conversation.last_message_seq += 1
    conversation.update_time = created
    row = MessageRow(
        id=str(uuid.uuid4()),
        conversation_id=conversation.id,
        owner_id=conversation.owner_id,
        seq=conversation.last_message_seq,
        role=message.role,
        content=convert.content_to_json(list(message.content)),
        run_id=run_id,
        request_id=request_id,
        create_time=created,
    )
    session.add(row)
    return row


# A page of messages stops once it holds this much content (gRPC answers are limited to 8 MiB).
MAX_PAGE_BYTES = 4 * 1024 * 1024
# A message's seq is unique in its conversation: the keyset of a page of messages is the seq alone.
_MESSAGES_KIND = "messages.1"
_RECENT_FIRST = paging.Keyset(
    "conversations.1", (ConversationRow.update_time, ConversationRow.id), (True, False), (datetime, str)
)
_ADVANCE_SEQ = (
    update(ConversationRow)
    .where(ConversationRow.id == bindparam("conversation_id"), ConversationRow.owner_id == bindparam("b_owner_id"))
    .values(last_message_seq=ConversationRow.last_message_seq + bindparam("count"), update_time=bindparam("now"))
    .returning(ConversationRow.last_message_seq)
)
_INSERT_MESSAGES = insert(MessageRow)
_OWNED = select(ConversationRow.id).where(
    ConversationRow.id == bindparam("conversation_id"), ConversationRow.owner_id == bindparam("owner_id")
)
_MESSAGES_PAGE = (
    select(MessageRow.__table__)
    .where(MessageRow.conversation_id == bindparam("conversation_id"), MessageRow.owner_id == bindparam("owner_id"))
    .where(MessageRow.seq > bindparam("after_seq"))
    .order_by(MessageRow.seq)
    .limit(bindparam("limit"))
)


def append_messages(
    connection: Connection,
    owner_id: str,
    conversation_id: str,
    messages: Sequence[content_pb2.ChatMessage],
    run_id: str,
    created: datetime,
    ids: Sequence[str] | None = None,
) -> list[conversation_pb2.Message]:
    """Append messages at the conversation's next seqs, on a sync connection inside a write transaction; `ids`
    (one per message) when the caller minted them.

    One UPDATE advances (and so locks) the conversation's seq; NOT_FOUND when it is not the owner's. A taken id
    raises IntegrityError (the caller's to map).
    """
    if not messages:
        return []
    advance = {"conversation_id": conversation_id, "b_owner_id": owner_id, "count": len(messages), "now": created}
    last = connection.execute(_ADVANCE_SEQ, advance).scalar()
    if last is None:
        raise not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} not found")
    stored = [
        conversation_pb2.Message(
            id=ids[index] if ids else str(uuid.uuid4()),
            conversation_id=conversation_id,
            seq=last - len(messages) + 1 + index,
            role=message.role,
            content=message.content,
            run_id=run_id,
            create_time=timeutil.timestamp(created),
        )
        for index, message in enumerate(messages)
    ]
    connection.execute(
        _INSERT_MESSAGES,
        [
            {
                "id": message.id,
                "conversation_id": conversation_id,
                "owner_id": owner_id,
                "seq": message.seq,
                "role": message.role,
                "content": convert.content_to_json(list(message.content)),
                "run_id": run_id,
                "request_id": None,
                "create_time": created,
            }
            for message in stored
        ],
    )
    return stored


def earlier_messages(connection: Connection, ids: Sequence[str]) -> list[conversation_pb2.Message]:
    """The messages with these ids, in conversation order (what an earlier write appended)."""
    if not ids:
        return []
    rows = connection.execute(select(MessageRow.__table__).where(MessageRow.id.in_(ids)).order_by(MessageRow.seq))
    return [convert.message_message(row) for row in rows]


class ConversationRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> None:
        self._sessions = sessions
        self._runner = runner

    async def create(
        self, owner_id: str, title: str, agent_id: str, request_id: str | None
    ) -> conversation_pb2.Conversation:
        async with self._sessions() as session, session.begin():
            if request_id is not None:
                existing = await session.scalar(
                    select(ConversationRow).where(
                        ConversationRow.owner_id == owner_id, ConversationRow.request_id == request_id
                    )
                )
                if existing is not None:
                    return convert.conversation_message(existing)
            if agent_id:
                await require_agent(session, owner_id, agent_id)
            created = timeutil.now()
            row = ConversationRow(
                id=str(uuid.uuid4()),
                owner_id=owner_id,
                title=title,
                agent_id=agent_id,
                request_id=request_id,
                last_message_seq=0,
                create_time=created,
                update_time=created,
            )
            session.add(row)
        return convert.conversation_message(row)

    async def get(self, owner_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        async with self._sessions() as session:
            row = await session.scalar(
                select(ConversationRow).where(
                    ConversationRow.id == conversation_id, ConversationRow.owner_id == owner_id
                )
            )
        if row is None:
            raise not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} not found")
        return convert.conversation_message(row)

    async def list_conversations(
        self, owner_id: str, page_token: str, limit: int
    ) -> tuple[list[conversation_pb2.Conversation], str]:
        """The owner's conversations, most recently updated first, and the next page token."""
        query = select(ConversationRow).where(ConversationRow.owner_id == owner_id)
        async with self._sessions() as session:
            return await paging.read_page(
                session,
                query,
                _RECENT_FIRST,
                page_token,
                limit,
                convert.conversation_message,
            )

    async def delete(self, owner_id: str, conversation_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await lock_conversation(session, owner_id, conversation_id)
            await session.execute(
                delete(ConversationRow).where(
                    ConversationRow.id == conversation_id, ConversationRow.owner_id == owner_id
                )
            )

    async def append(
        self, owner_id: str, conversation_id: str, message: content_pb2.ChatMessage, request_id: str | None
    ) -> conversation_pb2.Message:
        async with self._sessions() as session, session.begin():
            conversation = await lock_conversation(session, owner_id, conversation_id)
            if request_id is not None:
                existing = await session.scalar(
                    select(MessageRow).where(MessageRow.owner_id == owner_id, MessageRow.request_id == request_id)
                )
                if existing is not None:
                    return convert.message_message(existing)
            row = await append_message(session, conversation, message, request_id=request_id)
        return convert.message_message(row)

    async def list_messages(
        self, owner_id: str, conversation_id: str, page_token: str, limit: int
    ) -> tuple[list[conversation_pb2.Message], str]:
        """Up to `limit` messages after the token's, in order (one read transaction), and the next page token."""
        after = paging.decode(page_token, _MESSAGES_KIND, (int,))
        owned = {"conversation_id": conversation_id, "owner_id": owner_id}
        after_seq = 0 if after is None else after[0]

        def work(connection: Connection) -> list[Row[Any]] | None:
            if connection.execute(_OWNED, owned).first() is None:
                return None
            return list(connection.execute(_MESSAGES_PAGE, {**owned, "after_seq": after_seq, "limit": limit + 1}))

        rows = await self._runner.read(work)
        if rows is None:
            raise not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} not found")
        page: list[Row[Any]] = []
        size = 0
        for row in rows[:limit]:
            size += len(row.content)
            if page and size > MAX_PAGE_BYTES:  # a page of large messages stops short: the next page goes on
                break
            page.append(row)
        next_token = paging.encode(_MESSAGES_KIND, (page[-1].seq,)) if len(page) < len(rows) else ""
        return [convert.message_message(row) for row in page], next_token
