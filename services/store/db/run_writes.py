"""Writes to a run: event appends, step checkpoints, cancellation.

Appends and checkpoints are fenced by the lease epoch and idempotent by
`request_id`: a retry after a timeout returns the first result and appends
nothing (the key is recorded in `run_writes` in the same transaction).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import convert
from services.store.db.conversations import append_message, lock_conversation
from services.store.db.models import MessageRow, RunEventRow, RunRow, RunWriteRow
from services.store.db.run_rows import (
    TERMINAL_STATES,
    announce,
    announce_sync,
    event_values,
    insert_events,
    lock_fenced,
    lock_run,
)
from services.store.db.runner import TransactionRunner
from steward.common.v1 import content_pb2, usage_pb2
from steward.errors import failed_precondition, not_found
from steward.store.v1 import conversation_pb2, run_event_pb2, run_pb2


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
    request_id: str | None = None


async def _earlier_write(session: AsyncSession, run_id: str, request_id: str | None) -> RunWriteRow | None:
    if request_id is None:
        return None
    return await session.scalar(
        select(RunWriteRow).where(RunWriteRow.run_id == run_id, RunWriteRow.request_id == request_id)
    )


def _record_write(session: AsyncSession, row: RunRow, request_id: str | None, first: int, messages: list[str]) -> None:
    if request_id is not None:
        session.add(
            RunWriteRow(
                run_id=row.id,
                request_id=request_id,
                first_seq=first,
                last_seq=row.last_event_seq,
                message_ids=json.dumps(messages),
                create_time=convert.now(),
            )
        )


def _fence(connection: Connection, owner_id: str, run_id: str, epoch: int, *, lock: bool) -> None:
    """NOT_FOUND for an unknown or foreign run, LEASE_LOST for a stale epoch."""
    query = select(RunRow.lease_epoch).where(RunRow.id == run_id, RunRow.owner_id == owner_id)
    current = connection.execute(query.with_for_update() if lock else query).scalar()
    if current is None:
        raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
    if current != epoch:
        raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {current}")


class RunWriteRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> None:
        self._sessions = sessions
        self._runner = runner

    async def append_events(
        self,
        owner_id: str,
        run_id: str,
        epoch: int,
        events: Sequence[run_event_pb2.RunEvent],
        request_id: str | None,
    ) -> tuple[int, int, datetime | None]:
        """Append events in one transaction: the first and last seq, and the events' time
        (None when a retry found the earlier write and appended nothing).

        The hot path is two statements: one UPDATE that checks owner, epoch and
        state and reserves the seqs (RETURNING the new last seq), and one
        multi-row INSERT.
        """
        created = convert.now()

        def work(connection: Connection) -> tuple[int, int, datetime | None]:
            if request_id is not None:
                _fence(connection, owner_id, run_id, epoch, lock=True)
                earlier = connection.execute(
                    select(RunWriteRow.first_seq, RunWriteRow.last_seq).where(
                        RunWriteRow.run_id == run_id, RunWriteRow.request_id == request_id
                    )
                ).first()
                if earlier is not None:
                    return int(earlier[0]), int(earlier[1]), None
            last = connection.execute(
                update(RunRow)
                .where(
                    RunRow.id == run_id,
                    RunRow.owner_id == owner_id,
                    RunRow.lease_epoch == epoch,
                    RunRow.state.not_in(TERMINAL_STATES),
                )
                .values(last_event_seq=RunRow.last_event_seq + len(events), update_time=created)
                .returning(RunRow.last_event_seq)
            ).scalar()
            if last is None:
                _fence(connection, owner_id, run_id, epoch, lock=False)  # raises NOT_FOUND or LEASE_LOST
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            first = last - len(events) + 1
            connection.execute(
                insert(RunEventRow),
                [event_values(run_id, first + index, event, created) for index, event in enumerate(events)],
            )
            if request_id is not None:
                connection.execute(
                    insert(RunWriteRow).values(
                        run_id=run_id,
                        request_id=request_id,
                        first_seq=first,
                        last_seq=last,
                        message_ids="[]",
                        create_time=created,
                    )
                )
            announce_sync(connection, run_id)
            return first, last, created

        return await self._runner.write(work)

    async def checkpoint(
        self, owner_id: str, run_id: str, step: Checkpoint
    ) -> tuple[run_pb2.Run, list[conversation_pb2.Message]]:
        """Append a step's messages and events and move the run's state, atomically."""
        async with self._sessions() as session, session.begin():
            row = await lock_fenced(session, owner_id, run_id, step.epoch)
            earlier = await _earlier_write(session, run_id, step.request_id)
            if earlier is not None:
                ids = json.loads(earlier.message_ids)
                rows = (await session.scalars(select(MessageRow).where(MessageRow.id.in_(ids)))).all() if ids else []
                ordered = sorted(rows, key=lambda m: m.seq)
                return convert.run_message(row), [convert.message_message(m) for m in ordered]
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            created = convert.now()
            first = row.last_event_seq + 1
            message_rows: list[MessageRow] = []
            if step.messages:
                conversation = await lock_conversation(session, owner_id, row.conversation_id)
                for message in step.messages:
                    message_rows.append(await append_message(session, conversation, message, run_id=row.id))
            await insert_events(session, row, step.events, created)
            self._apply_state(row, step, created)
            _record_write(session, row, step.request_id, first, [m.id for m in message_rows])
            await announce(session, run_id)
        return convert.run_message(row), [convert.message_message(m) for m in message_rows]

    @staticmethod
    def _apply_state(row: RunRow, step: Checkpoint, now: object) -> None:
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
                row.end_time = now  # type: ignore[assignment]
        if step.step_count:
            row.step_count = step.step_count
        if step.usage is not None:
            row.usage = step.usage.SerializeToString()
        row.update_time = now  # type: ignore[assignment]

    async def request_cancel(self, owner_id: str, run_id: str, cancelled_by: str) -> run_pb2.Run:
        """Cancel a queued or paused run now; flag a running one for its holder; leave an ended one."""
        async with self._sessions() as session, session.begin():
            row = await lock_run(session, owner_id, run_id)
            if row.state in TERMINAL_STATES:
                return convert.run_message(row)
            now = convert.now()
            row.cancel_requested = True
            row.update_time = now
            if row.state in (run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_PAUSED):
                # Nobody holds the run: end it here, and fence off any claim in flight.
                row.lease_epoch += 1
                row.state = run_pb2.RUN_STATE_CANCELLED
                row.pause_reason = run_pb2.PAUSE_REASON_UNSPECIFIED
                row.lease_holder = ""
                row.lease_expire_time = None
                row.end_time = now
                cancelled = run_event_pb2.RunEvent(run_cancelled=run_event_pb2.RunCancelled(cancelled_by=cancelled_by))
                await insert_events(session, row, [cancelled], now)
            await announce(session, run_id)
        return convert.run_message(row)
