"""Runs: creation (with the input message, atomically), reads, and event log reads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import convert
from services.store.db.agents import require_agent
from services.store.db.conversations import append_message, lock_conversation
from services.store.db.leases import take
from services.store.db.models import ConversationRow, MessageRow, RunEventRow, RunRow
from services.store.db.paging import page
from services.store.db.run_rows import TERMINAL_STATES, event_message
from services.store.db.runner import TransactionRunner
from steward.common.v1 import content_pb2, limits_pb2
from steward.errors import StewardError, failed_precondition, not_found
from steward.store.v1 import agent_pb2, conversation_pb2, run_event_pb2, run_pb2


@dataclass(frozen=True)
class NewRun:
    run_id: str
    conversation_id: str
    agent_id: str
    mode: agent_pb2.RunMode.ValueType
    limits: limits_pb2.RunLimits
    request_id: str | None
    input_message: content_pb2.ChatMessage | None
    client_tools: list[content_pb2.ToolSpec] | None = None
    # A conversation to create for the run (conversation_id is then empty).
    new_conversation: conversation_pb2.NewConversation | None = None
    # Claim the new run for this holder, for this long, in the same transaction.
    claim: tuple[str, timedelta] | None = None


def _client_tools(specs: list[content_pb2.ToolSpec] | None) -> bytes | None:
    return run_pb2.Run(client_tools=specs).SerializeToString(deterministic=True) if specs else None


async def _new_conversation(session: AsyncSession, owner_id: str, new: NewRun, created: datetime) -> ConversationRow:
    """The run's new conversation, with the messages it starts with."""
    assert new.new_conversation is not None
    conversation = ConversationRow(
        id=str(uuid.uuid4()),
        owner_id=owner_id,
        title=new.new_conversation.title,
        agent_id=new.agent_id,
        request_id=None,
        last_message_seq=0,
        create_time=created,
        update_time=created,
    )
    session.add(conversation)
    for message in new.new_conversation.messages:
        await append_message(session, conversation, message)
    return conversation


class RunRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> None:
        self._sessions = sessions
        self._runner = runner

    async def create(self, owner_id: str, new: NewRun) -> tuple[run_pb2.Run, bool, conversation_pb2.Message | None]:
        """Create a queued run (and its input message) once; a duplicate returns the first."""
        try:
            return await self._create(owner_id, new)
        except IntegrityError as exc:  # a concurrent create took the run id or request id
            raise StewardError(
                grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT", "run id or request_id already used"
            ) from exc

    async def _create(self, owner_id: str, new: NewRun) -> tuple[run_pb2.Run, bool, conversation_pb2.Message | None]:
        async with self._sessions() as session, session.begin():
            if new.new_conversation is None:
                conversation = await lock_conversation(session, owner_id, new.conversation_id)
            existing = await session.scalar(select(RunRow).where(RunRow.id == new.run_id))
            if existing is None and new.request_id is not None:
                existing = await session.scalar(
                    select(RunRow).where(RunRow.owner_id == owner_id, RunRow.request_id == new.request_id)
                )
            if existing is not None:
                same_conversation = new.new_conversation is not None or existing.conversation_id == new.conversation_id
                if existing.owner_id != owner_id or not same_conversation:
                    raise StewardError(
                        grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT", "run id or request_id already used"
                    )
                first = await session.scalar(
                    select(MessageRow).where(MessageRow.run_id == existing.id, MessageRow.role == content_pb2.ROLE_USER)
                )
                return convert.run_message(existing), True, convert.message_message(first) if first else None
            created = convert.now()
            if new.agent_id:
                await require_agent(session, owner_id, new.agent_id)
            if new.new_conversation is not None:
                conversation = await _new_conversation(session, owner_id, new, created)
            row = RunRow(
                id=new.run_id,
                owner_id=owner_id,
                conversation_id=conversation.id,
                agent_id=new.agent_id or conversation.agent_id,
                state=run_pb2.RUN_STATE_QUEUED,
                mode=new.mode,
                limits=new.limits.SerializeToString(),
                client_tools=run_pb2.Run(client_tools=new.client_tools).SerializeToString()
                if new.client_tools
                else None,
                request_id=new.request_id,
                lease_epoch=0,
                last_event_seq=0,
                step_count=0,
                cancel_requested=False,
                create_time=created,
                update_time=created,
            )
            if new.claim is not None:
                take(row, *new.claim, created)
            session.add(row)
            message_row = None
            if new.input_message is not None:
                message_row = await append_message(session, conversation, new.input_message, run_id=new.run_id)
        return convert.run_message(row), False, convert.message_message(message_row) if message_row else None

    async def get(self, owner_id: str, run_id: str) -> run_pb2.Run:
        async with self._sessions() as session:
            row = await session.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.owner_id == owner_id))
        if row is None:
            raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
        return convert.run_message(row)

    async def list_runs(
        self, owner_id: str, conversation_id: str, offset: int, limit: int
    ) -> tuple[list[run_pb2.Run], str]:
        query = select(RunRow).where(RunRow.owner_id == owner_id)
        if conversation_id:
            query = query.where(RunRow.conversation_id == conversation_id)
        async with self._sessions() as session:
            return await page(
                session, query.order_by(RunRow.create_time.desc(), RunRow.id), offset, limit, convert.run_message
            )

    async def events_after(
        self, owner_id: str, run_id: str, after_seq: int, limit: int
    ) -> tuple[list[run_event_pb2.RunEvent], bool]:
        """Up to `limit` events after `after_seq`, and whether the run has ended.

        One round trip: the run's ownership, state and retention point come back
        with the events. A cursor inside the part of the log that retention
        removed is refused (CURSOR_EXPIRED): replaying from it would silently
        skip events.
        """
        query = (
            select(
                RunRow.state,
                RunRow.compacted_through_seq,
                RunEventRow.seq,
                RunEventRow.payload,
                RunEventRow.create_time,
            )
            .select_from(RunRow)
            .outerjoin(RunEventRow, (RunEventRow.run_id == RunRow.id) & (RunEventRow.seq > after_seq))
            .where(RunRow.id == run_id, RunRow.owner_id == owner_id)
            .order_by(RunEventRow.seq)
            .limit(limit)
        )
        rows = await self._runner.read(lambda connection: list(connection.execute(query).all()))
        if not rows:
            raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
        state, compacted_through = rows[0][0], rows[0][1]
        if after_seq < compacted_through:
            raise failed_precondition(
                "CURSOR_EXPIRED",
                f"events up to {compacted_through} were compacted; read the conversation's messages",
            )
        events = [
            event_message(run_id, seq, payload, created) for _, _, seq, payload, created in rows if seq is not None
        ]
        return events, state in TERMINAL_STATES
