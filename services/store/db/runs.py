"""Runs, their event logs and their leases, always scoped by the owner.

Every write on behalf of a run locks the run row and checks the caller's lease
epoch first: a stale holder changes nothing (LEASE_LOST). Event seqs come from
the locked row's `last_event_seq`, so they are gap-free and monotonic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import convert
from services.store.db.conversations import append_message, lock_conversation
from services.store.db.models import MessageRow, RunEventRow, RunRow
from steward.common.v1 import content_pb2, limits_pb2, usage_pb2
from steward.errors import StewardError, failed_precondition, invalid_argument, not_found
from steward.store.v1 import agent_pb2, conversation_pb2, run_event_pb2, run_pb2

TERMINAL_STATES = frozenset(
    {
        run_pb2.RUN_STATE_COMPLETED,
        run_pb2.RUN_STATE_FAILED,
        run_pb2.RUN_STATE_CANCELLED,
        run_pb2.RUN_STATE_INCOMPLETE,
        run_pb2.RUN_STATE_EXPIRED,
    }
)
TERMINAL_EVENT_KINDS = frozenset({"run_completed", "run_failed", "run_cancelled", "run_incomplete", "run_expired"})


@dataclass(frozen=True)
class NewRun:
    run_id: str
    conversation_id: str
    agent_id: str
    mode: agent_pb2.RunMode.ValueType
    limits: limits_pb2.RunLimits
    request_id: str | None
    input_message: content_pb2.ChatMessage | None


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    messages: Sequence[content_pb2.ChatMessage]
    events: Sequence[run_event_pb2.RunEvent]
    state: run_pb2.RunState.ValueType
    pause_reason: run_pb2.PauseReason.ValueType
    incomplete_reason: run_pb2.IncompleteReason.ValueType
    error: run_pb2.RunError | None
    step_count: int
    usage: usage_pb2.Usage | None


def _event_row(run: RunRow, event: run_event_pb2.RunEvent, created: object) -> RunEventRow:
    kind = event.WhichOneof("payload")
    if kind is None:
        raise invalid_argument("events", "an event has no payload")
    body = run_event_pb2.RunEvent()
    body.CopyFrom(event)
    body.ClearField("run_id")
    body.ClearField("seq")
    body.ClearField("create_time")
    run.last_event_seq += 1
    return RunEventRow(
        run_id=run.id,
        seq=run.last_event_seq,
        step=event.step,
        kind=kind,
        payload=body.SerializeToString(),
        create_time=created,
    )


def event_message(row: RunEventRow) -> run_event_pb2.RunEvent:
    event = run_event_pb2.RunEvent.FromString(row.payload)
    event.run_id = row.run_id
    event.seq = row.seq
    event.create_time.FromDatetime(convert.aware(row.create_time))
    return event


class RunRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def _lock(self, session: AsyncSession, owner_id: str, run_id: str) -> RunRow:
        row = await session.scalar(
            select(RunRow).where(RunRow.id == run_id, RunRow.owner_id == owner_id).with_for_update()
        )
        if row is None:
            raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
        return row

    async def _lock_fenced(self, session: AsyncSession, owner_id: str, run_id: str, epoch: int) -> RunRow:
        row = await self._lock(session, owner_id, run_id)
        if epoch != row.lease_epoch:
            raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {row.lease_epoch}")
        return row

    async def create(self, owner_id: str, new: NewRun) -> tuple[run_pb2.Run, bool, conversation_pb2.Message | None]:
        async with self._sessions() as session, session.begin():
            conversation = await lock_conversation(session, owner_id, new.conversation_id)
            existing = await session.scalar(select(RunRow).where(RunRow.id == new.run_id))
            if existing is None and new.request_id is not None:
                existing = await session.scalar(
                    select(RunRow).where(RunRow.owner_id == owner_id, RunRow.request_id == new.request_id)
                )
            if existing is not None:
                if existing.owner_id != owner_id or existing.conversation_id != new.conversation_id:
                    raise StewardError(
                        grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT", "run id or request_id already used"
                    )
                first = await session.scalar(
                    select(MessageRow).where(MessageRow.run_id == existing.id, MessageRow.role == content_pb2.ROLE_USER)
                )
                return convert.run_message(existing), True, convert.message_message(first) if first else None
            created = convert.now()
            row = RunRow(
                id=new.run_id,
                owner_id=owner_id,
                conversation_id=new.conversation_id,
                agent_id=new.agent_id or conversation.agent_id,
                state=run_pb2.RUN_STATE_QUEUED,
                mode=new.mode,
                limits=new.limits.SerializeToString(),
                request_id=new.request_id,
                lease_epoch=0,
                last_event_seq=0,
                step_count=0,
                cancel_requested=False,
                create_time=created,
                update_time=created,
            )
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
            rows = (
                await session.scalars(
                    query.order_by(RunRow.create_time.desc(), RunRow.id).offset(offset).limit(limit + 1)
                )
            ).all()
        next_token = str(offset + limit) if len(rows) > limit else ""
        return [convert.run_message(row) for row in rows[:limit]], next_token

    async def claim(self, owner_id: str, run_id: str, holder: str, ttl: timedelta) -> run_pb2.Run:
        async with self._sessions() as session, session.begin():
            row = await self._lock(session, owner_id, run_id)
            current = convert.now()
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            expiry = row.lease_expire_time
            if expiry is not None and expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=current.tzinfo)
            if row.lease_holder and expiry is not None and expiry > current:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} is held by a live lease")
            row.lease_epoch += 1
            row.lease_holder = holder
            row.lease_expire_time = current + ttl
            row.state = run_pb2.RUN_STATE_RUNNING
            row.pause_reason = run_pb2.PAUSE_REASON_UNSPECIFIED
            row.update_time = current
        return convert.run_message(row)

    async def append_events(
        self, owner_id: str, run_id: str, epoch: int, events: Sequence[run_event_pb2.RunEvent]
    ) -> tuple[int, int]:
        async with self._sessions() as session, session.begin():
            row = await self._lock_fenced(session, owner_id, run_id, epoch)
            first = row.last_event_seq + 1
            created = convert.now()
            session.add_all([_event_row(row, event, created) for event in events])
            row.update_time = created
        return first, row.last_event_seq

    async def checkpoint(
        self, owner_id: str, run_id: str, step: Checkpoint
    ) -> tuple[run_pb2.Run, list[conversation_pb2.Message]]:
        async with self._sessions() as session, session.begin():
            row = await self._lock_fenced(session, owner_id, run_id, step.epoch)
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            created = convert.now()
            message_rows: list[MessageRow] = []
            if step.messages:
                conversation = await lock_conversation(session, owner_id, row.conversation_id)
                for message in step.messages:
                    message_rows.append(await append_message(session, conversation, message, run_id=row.id))
            session.add_all([_event_row(row, event, created) for event in step.events])
            if step.state != run_pb2.RUN_STATE_UNSPECIFIED:
                row.state = step.state
                row.pause_reason = step.pause_reason
                row.incomplete_reason = step.incomplete_reason
                if step.error is not None:
                    row.error = step.error.SerializeToString()
                if step.state != run_pb2.RUN_STATE_RUNNING:
                    row.lease_holder = ""
                    row.lease_expire_time = None
                if step.state in TERMINAL_STATES:
                    row.end_time = created
            if step.step_count:
                row.step_count = step.step_count
            if step.usage is not None:
                row.usage = step.usage.SerializeToString()
            row.update_time = created
        return convert.run_message(row), [convert.message_message(m) for m in message_rows]

    async def events_after(
        self, owner_id: str, run_id: str, after_seq: int, limit: int
    ) -> tuple[list[run_event_pb2.RunEvent], bool]:
        """Up to `limit` events after `after_seq`, and whether the run has ended."""
        async with self._sessions() as session:
            run = await session.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.owner_id == owner_id))
            if run is None:
                raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
            rows = (
                await session.scalars(
                    select(RunEventRow)
                    .where(RunEventRow.run_id == run_id, RunEventRow.seq > after_seq)
                    .order_by(RunEventRow.seq)
                    .limit(limit)
                )
            ).all()
        return [event_message(row) for row in rows], run.state in TERMINAL_STATES
