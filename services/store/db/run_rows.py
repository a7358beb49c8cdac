"""What every run repository shares: terminal states, row locks with fencing, event rows.

Every write on behalf of a run locks the run row and checks the caller's lease
epoch first, in the same transaction as the write: a stale holder changes
nothing (LEASE_LOST). Event seqs come from the locked row's `last_event_seq`,
so they are gap-free and monotonic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.store.db.models import RunEventRow, RunRow
from steward import timeutil
from steward.errors import failed_precondition, invalid_argument, not_found
from steward.store.v1 import run_event_pb2, run_pb2

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
# Postgres channel on which every store replica hears that a run's log grew.
NOTIFY_CHANNEL = "steward_run_events"


async def lock_run(session: AsyncSession, owner_id: str, run_id: str) -> RunRow:
    """The owner's run, locked for update; NOT_FOUND otherwise (also for another user's run)."""
    row = await session.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.owner_id == owner_id).with_for_update())
    if row is None:
        raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
    return row


async def lock_fenced(session: AsyncSession, owner_id: str, run_id: str, epoch: int) -> RunRow:
    """The locked run, if `epoch` is its current lease epoch; LEASE_LOST otherwise."""
    row = await lock_run(session, owner_id, run_id)
    if epoch != row.lease_epoch:
        raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {row.lease_epoch}")
    return row


def event_values(run_id: str, seq: int, event: run_event_pb2.RunEvent, created: datetime) -> dict[str, object]:
    """The run_events row for `event` at `seq`: the payload without run_id, seq and create_time."""
    kind = event.WhichOneof("payload")
    if kind is None:
        raise invalid_argument("events", "an event has no payload")
    if event.run_id or event.seq or event.HasField("create_time"):
        body = run_event_pb2.RunEvent()
        body.CopyFrom(event)
        body.ClearField("run_id")
        body.ClearField("seq")
        body.ClearField("create_time")
        event = body
    return {
        "run_id": run_id,
        "seq": seq,
        "step": event.step,
        "kind": kind,
        "payload": event.SerializeToString(),
        "create_time": created,
    }


async def insert_events(
    session: AsyncSession, run: RunRow, events: Sequence[run_event_pb2.RunEvent], created: datetime
) -> None:
    """Append events to the (locked) run's log, advancing its `last_event_seq`."""
    if not events:
        return
    first = run.last_event_seq + 1
    rows = [event_values(run.id, first + index, event, created) for index, event in enumerate(events)]
    run.last_event_seq += len(events)
    await session.execute(insert(RunEventRow), rows)


def event_message(run_id: str, seq: int, payload: bytes, created: datetime) -> run_event_pb2.RunEvent:
    event = run_event_pb2.RunEvent.FromString(payload)
    event.run_id = run_id
    event.seq = seq
    event.create_time.FromDatetime(timeutil.aware(created))
    return event


async def announce(session: AsyncSession, run_id: str) -> None:
    """On Postgres, tell every store replica (at commit) that the run changed."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :run_id)"), {"channel": NOTIFY_CHANNEL, "run_id": run_id}
        )


def announce_sync(connection: Connection, run_id: str) -> None:
    """`announce` for a unit of work running on a sync Connection."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, :run_id)"), {"channel": NOTIFY_CHANNEL, "run_id": run_id})
