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
from typing import Any

import grpc
from sqlalchemy import Connection, Row, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db import convert
from services.store.db.conversations import append_messages, earlier_messages
from services.store.db.models import RunEventRow, RunRow, RunWriteRow
from services.store.db.run_rows import (
    TERMINAL_STATES,
    announce,
    announce_sync,
    event_values,
    insert_events,
    lock_run,
)
from services.store.db.runner import TransactionRunner
from steward import timeutil
from steward.common.v1 import content_pb2, usage_pb2
from steward.errors import StewardError, failed_precondition, not_found
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
    message_ids: list[str] | None = None  # minted by the caller; None: the store mints them
    running_ms: int | None = None  # the run's running time so far; None leaves it as it is
    stop_reason: run_pb2.StopReason.ValueType = run_pb2.STOP_REASON_UNSPECIFIED  # unspecified leaves it as it is
    pause_expire_time: datetime | None = None  # a pause's deadline (state paused); None: no deadline


# The hot paths' statements, built once: constructing a statement costs more than SQLite takes to run it.
_RUN = select(RunRow.__table__).where(RunRow.id == bindparam("run_id"), RunRow.owner_id == bindparam("owner_id"))
# The locked run with the write already made under the request id, if any (earlier_* NULL otherwise): one read.
_RUN_AND_EARLIER = (
    select(
        RunRow.__table__,
        RunWriteRow.first_seq.label("earlier_first_seq"),
        RunWriteRow.last_seq.label("earlier_last_seq"),
        RunWriteRow.message_ids.label("earlier_message_ids"),
    )
    .select_from(
        RunRow.__table__.outerjoin(
            RunWriteRow.__table__,
            and_(RunWriteRow.run_id == RunRow.id, RunWriteRow.request_id == bindparam("request_id")),
        )
    )
    .where(RunRow.id == bindparam("run_id"), RunRow.owner_id == bindparam("owner_id"))
    .with_for_update(of=RunRow.__table__)
)
_RESERVE_SEQS = (
    update(RunRow)
    .where(
        RunRow.id == bindparam("run_id"),
        RunRow.owner_id == bindparam("b_owner_id"),  # not "owner_id": an UPDATE reserves its columns' names
        RunRow.lease_epoch == bindparam("epoch"),
        RunRow.state.not_in(TERMINAL_STATES),
    )
    .values(last_event_seq=RunRow.last_event_seq + bindparam("count"), update_time=bindparam("now"))
    .returning(RunRow.last_event_seq)
)
_SET_AGENT_VERSION = (
    update(RunRow).where(RunRow.id == bindparam("run_id")).values(agent_version=bindparam("started_version"))
)
_INSERT_EVENTS = insert(RunEventRow)
_RECORD_WRITE = insert(RunWriteRow)
# What a checkpoint may change; every column is written (the unchanged ones with their current value).
_CHECKPOINTED = (
    "state",
    "pause_reason",
    "incomplete_reason",
    "error",
    "lease_holder",
    "lease_expire_time",
    "pause_expire_time",
    "end_time",
    "step_count",
    "usage",
    "last_event_seq",
    "update_time",
    "running_ms",
    "agent_version",
    "stop_reason",
)
_UPDATE_RUN = (
    update(RunRow)
    .where(RunRow.id == bindparam("run_id"))
    .values({name: bindparam(f"new_{name}") for name in _CHECKPOINTED})
)


def _started_version(events: Sequence[run_event_pb2.RunEvent]) -> int | None:
    """The agent version a `run_started` event among `events` records (the run's `agent_version`); None without one."""
    for event in events:
        if event.WhichOneof("payload") == "run_started":
            return event.run_started.agent_version
    return None


def _fenced(row: Row[Any] | None, run_id: str, epoch: int) -> Row[Any]:
    """The run's row; NOT_FOUND for an unknown or foreign run, LEASE_LOST for a stale epoch."""
    if row is None:
        raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
    if row.lease_epoch != epoch:
        raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {row.lease_epoch}")
    return row


def _locked_run(connection: Connection, owner_id: str, run_id: str, epoch: int, request_id: str | None) -> Row[Any]:
    """The run, locked and fenced, with the write already made under `request_id` in its earlier_* columns."""
    params = {"run_id": run_id, "owner_id": owner_id, "request_id": request_id}
    return _fenced(connection.execute(_RUN_AND_EARLIER, params).first(), run_id, epoch)


def _insert_events(
    connection: Connection, run_id: str, first: int, events: Sequence[run_event_pb2.RunEvent], created: datetime
) -> None:
    if events:
        rows = [event_values(run_id, first + index, event, created) for index, event in enumerate(events)]
        connection.execute(_INSERT_EVENTS, rows)


def _record_write(
    connection: Connection,
    run_id: str,
    request_id: str | None,
    seqs: tuple[int, int],
    message_ids: list[str],
    created: datetime,
) -> None:
    if request_id is not None:
        connection.execute(
            _RECORD_WRITE,
            {
                "run_id": run_id,
                "request_id": request_id,
                "first_seq": seqs[0],
                "last_seq": seqs[1],
                "message_ids": json.dumps(message_ids),
                "create_time": created,
            },
        )


def _checkpointed(row: Row[Any], step: Checkpoint, now: datetime) -> dict[str, Any]:
    """The run's checkpointed columns after `step`: its current values, with what the step changes."""
    values: dict[str, Any] = {name: getattr(row, name) for name in _CHECKPOINTED}
    values |= {"last_event_seq": row.last_event_seq + len(step.events), "update_time": now}
    if step.state != run_pb2.RUN_STATE_UNSPECIFIED:
        values |= {
            "state": step.state,
            "pause_reason": step.pause_reason,
            "incomplete_reason": step.incomplete_reason,
            "pause_expire_time": step.pause_expire_time if step.state == run_pb2.RUN_STATE_PAUSED else None,
        }
        if step.error is not None:
            values["error"] = step.error.SerializeToString()
        if step.state != run_pb2.RUN_STATE_RUNNING:
            values |= {"lease_holder": "", "lease_expire_time": None}
        if step.state in TERMINAL_STATES:
            values["end_time"] = now
    if step.step_count:
        values["step_count"] = step.step_count
    if step.usage is not None:
        values["usage"] = step.usage.SerializeToString()
    if step.running_ms is not None:
        values["running_ms"] = max(row.running_ms or 0, step.running_ms)  # it never goes back
    started = _started_version(step.events)
    if started is not None:
        values["agent_version"] = started
    if step.stop_reason:
        values["stop_reason"] = step.stop_reason
    return values


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
        created = timeutil.now()

        def work(connection: Connection) -> tuple[int, int, datetime | None]:
            if request_id is not None:
                locked = _locked_run(connection, owner_id, run_id, epoch, request_id)
                if locked.earlier_first_seq is not None:
                    return int(locked.earlier_first_seq), int(locked.earlier_last_seq), None
            reserve = {"run_id": run_id, "b_owner_id": owner_id, "epoch": epoch, "count": len(events), "now": created}
            last = connection.execute(_RESERVE_SEQS, reserve).scalar()
            if last is None:
                row = connection.execute(_RUN, {"run_id": run_id, "owner_id": owner_id}).first()
                _fenced(row, run_id, epoch)  # raises NOT_FOUND or LEASE_LOST
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            first = last - len(events) + 1
            _insert_events(connection, run_id, first, events, created)
            started = _started_version(events)
            if started is not None:  # once per run: the run records the agent version it started with
                connection.execute(_SET_AGENT_VERSION, {"run_id": run_id, "started_version": started})
            _record_write(connection, run_id, request_id, (first, last), [], created)
            announce_sync(connection, run_id)
            return first, last, created

        return await self._runner.write(work)

    async def checkpoint(
        self, owner_id: str, run_id: str, step: Checkpoint
    ) -> tuple[run_pb2.Run, list[conversation_pb2.Message], int, datetime | None]:
        """Append a step's messages and events and move the run's state, atomically; the run, the messages, the
        seq of the checkpoint's last event and the events' time (a retry gets the first call's messages and seq
        back, and no time: it appended nothing).

        One unit of work on the runner (one thread hop on SQLite): lock the run and check the epoch,
        find an earlier write with the same request id, append the messages (the conversation's seq
        is advanced by one UPDATE), insert the events, update the run, record the request id.
        """
        created = timeutil.now()

        def work(connection: Connection) -> tuple[run_pb2.Run, list[conversation_pb2.Message], int, datetime | None]:
            row = _locked_run(connection, owner_id, run_id, step.epoch, step.request_id)
            if row.earlier_first_seq is not None:
                messages = earlier_messages(connection, json.loads(row.earlier_message_ids))
                return convert.run_message(row), messages, int(row.earlier_last_seq), None
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            messages = append_messages(
                connection, owner_id, row.conversation_id, step.messages, run_id, created, step.message_ids
            )
            _insert_events(connection, run_id, row.last_event_seq + 1, step.events, created)
            values = _checkpointed(row, step, created)
            connection.execute(_UPDATE_RUN, {"run_id": run_id, **{f"new_{k}": v for k, v in values.items()}})
            seqs = (row.last_event_seq + 1, values["last_event_seq"])
            _record_write(connection, run_id, step.request_id, seqs, [m.id for m in messages], created)
            announce_sync(connection, run_id)
            run = convert.run_from_columns({**row._mapping, **values})  # earlier_* go unread
            return run, messages, values["last_event_seq"], created

        try:
            return await self._runner.write(work)
        except IntegrityError as exc:
            if step.message_ids is None:
                raise
            # The run's row lock serializes its checkpoints: only a caller-minted message id can collide.
            raise StewardError(
                grpc.StatusCode.ALREADY_EXISTS, "MESSAGE_ID_CONFLICT", "a message id is already taken"
            ) from exc

    async def request_cancel(self, owner_id: str, run_id: str, cancelled_by: str) -> run_pb2.Run:
        """Cancel a queued or paused run now; flag a running one for its holder; leave an ended one."""
        async with self._sessions() as session, session.begin():
            row = await lock_run(session, owner_id, run_id)
            if row.state in TERMINAL_STATES:
                return convert.run_message(row)
            now = timeutil.now()
            row.cancel_requested = True
            row.update_time = now
            if row.state in (run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_PAUSED):
                # Nobody holds the run: end it here, and fence off any claim in flight.
                row.lease_epoch += 1
                row.state = run_pb2.RUN_STATE_CANCELLED
                row.pause_reason = run_pb2.PAUSE_REASON_UNSPECIFIED
                row.pause_expire_time = None
                row.lease_holder = ""
                row.lease_expire_time = None
                row.end_time = now
                cancelled = run_event_pb2.RunEvent(run_cancelled=run_event_pb2.RunCancelled(cancelled_by=cancelled_by))
                await insert_events(session, row, [cancelled], now)
            await announce(session, run_id)
        return convert.run_message(row)
