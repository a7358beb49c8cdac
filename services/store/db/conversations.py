"""Conversations and messages, always scoped by the owner."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import convert
from services.store.db.models import ConversationRow, MessageRow
from services.store.db.paging import page
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
    created = convert.now()
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


class ConversationRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

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
            created = convert.now()
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
        self, owner_id: str, offset: int, limit: int
    ) -> tuple[list[conversation_pb2.Conversation], str]:
        async with self._sessions() as session:
            return await page(
                session,
                select(ConversationRow)
                .where(ConversationRow.owner_id == owner_id)
                .order_by(ConversationRow.update_time.desc(), ConversationRow.id),
                offset,
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
        self, owner_id: str, conversation_id: str, offset: int, limit: int
    ) -> tuple[list[conversation_pb2.Message], str]:
        async with self._sessions() as session:
            exists = await session.scalar(
                select(func.count())
                .select_from(ConversationRow)
                .where(ConversationRow.id == conversation_id, ConversationRow.owner_id == owner_id)
            )
            if not exists:
                raise not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} not found")
            return await page(
                session,
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation_id, MessageRow.owner_id == owner_id)
                .order_by(MessageRow.seq),
                offset,
                limit,
                convert.message_message,
            )
