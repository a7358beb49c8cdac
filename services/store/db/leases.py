"""Run leases: claim one run, claim runnable runs, heartbeat, release; end paused runs past their pause deadline.

Each claim increments the run's epoch, and every later write must carry it
(see run_rows.lock_fenced). A run is runnable when it is queued, or running
with an expired or released lease; a replica restarted under the same holder
may also ask for the runs its holder name still holds (`reclaim_held`): the
new epoch fences its previous start, which can no longer write. A claimer
names the runs it drives now (`driven`), which it never takes: a replica cut
off from the store longer than a lease still drives them. On Postgres,
concurrent claimers skip rows another transaction holds (FOR UPDATE SKIP
LOCKED); on SQLite every write transaction is serialized (BEGIN IMMEDIATE),
which gives the same guarantee.

A paused run holds no lease; its pause deadline (`pause_expire_time`, set by the checkpoint that paused it,
cleared by any claim) is how `expire_paused` finds it once the deadline passed (ADR 0018). The expiry takes a
new epoch like a claim, so a claim or a write in flight for the run is refused after it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, insert, or_, select, update

from services.store.db import convert
from services.store.db.models import RunEventRow, RunRow
from services.store.db.run_rows import TERMINAL_STATES, announce_sync, event_values
from services.store.db.runner import TransactionRunner
from steward import timeutil
from steward.errors import failed_precondition, not_found
from steward.store.v1 import run_event_pb2, run_pb2

# Built once (constructing a statement costs more than SQLite takes to run it).
_LOCKED_RUN = (
    select(RunRow.__table__)
    .where(RunRow.id == bindparam("run_id"), RunRow.owner_id == bindparam("owner_id"))
    .with_for_update()
)
_TAKE = (
    update(RunRow)
    .where(RunRow.id == bindparam("b_id"))  # not "id": an UPDATE reserves its columns' names
    .values(
        lease_epoch=bindparam("lease_epoch"),
        lease_holder=bindparam("lease_holder"),
        lease_expire_time=bindparam("lease_expire_time"),
        state=bindparam("state"),
        pause_reason=bindparam("pause_reason"),
        pause_expire_time=bindparam("pause_expire_time"),
        update_time=bindparam("update_time"),
    )
)
_EXPIRE = (
    update(RunRow)
    .where(RunRow.id == bindparam("b_id"))
    .values(
        lease_epoch=bindparam("lease_epoch"),
        lease_holder=bindparam("lease_holder"),
        lease_expire_time=bindparam("lease_expire_time"),
        state=bindparam("state"),
        pause_reason=bindparam("pause_reason"),
        pause_expire_time=bindparam("pause_expire_time"),
        last_event_seq=bindparam("last_event_seq"),
        update_time=bindparam("update_time"),
        end_time=bindparam("end_time"),
    )
)
_INSERT_EVENT = insert(RunEventRow)
_LEASE = (
    update(RunRow)
    .where(RunRow.id == bindparam("b_id"))
    .values(
        lease_holder=bindparam("lease_holder"),
        lease_expire_time=bindparam("lease_expire_time"),
        update_time=bindparam("update_time"),
    )
)


def _lease_live(row: Row[Any], now: datetime) -> bool:
    return bool(row.lease_holder) and row.lease_expire_time is not None and timeutil.aware(row.lease_expire_time) > now


def _locked(connection: Connection, owner_id: str, run_id: str) -> Row[Any]:
    """The owner's run, locked for update; NOT_FOUND otherwise (also for another user's run)."""
    row = connection.execute(_LOCKED_RUN, {"run_id": run_id, "owner_id": owner_id}).first()
    if row is None:
        raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
    return row


def _locked_fenced(connection: Connection, owner_id: str, run_id: str, epoch: int) -> Row[Any]:
    """The locked run, if `epoch` is its current lease epoch; LEASE_LOST otherwise."""
    row = _locked(connection, owner_id, run_id)
    if epoch != row.lease_epoch:
        raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {row.lease_epoch}")
    return row


def _taken(row: Row[Any], holder: str, ttl: timedelta, now: datetime) -> dict[str, Any]:
    """The columns a claim sets: a new epoch, the holder and its lease, and the run running."""
    return {
        "lease_epoch": row.lease_epoch + 1,
        "lease_holder": holder,
        "lease_expire_time": now + ttl,
        "state": run_pb2.RUN_STATE_RUNNING,
        "pause_reason": run_pb2.PAUSE_REASON_UNSPECIFIED,
        "pause_expire_time": None,  # a pause's deadline ends with the pause
        "update_time": now,
    }


def _expired(row: Row[Any], now: datetime) -> dict[str, Any]:
    """The columns an expiry sets: ended, with a new epoch (fencing a claim in flight) and one more event."""
    return {
        "lease_epoch": row.lease_epoch + 1,
        "lease_holder": "",
        "lease_expire_time": None,
        "state": run_pb2.RUN_STATE_EXPIRED,
        "pause_reason": run_pb2.PAUSE_REASON_UNSPECIFIED,
        "pause_expire_time": None,
        "last_event_seq": row.last_event_seq + 1,
        "update_time": now,
        "end_time": now,
    }


def _set(connection: Connection, statement: Any, row: Row[Any], values: dict[str, Any]) -> run_pb2.Run:
    connection.execute(statement, {"b_id": row.id, **values})
    return convert.run_from_columns({**row._mapping, **values})


class LeaseRepository:
    """Every lease change is one short unit of work on the runner (on SQLite, written at once when the write lock
    is free): a heartbeat per run every few seconds must never hold the lock across event-loop turns, as an ORM
    session's statements, one thread hop each, would (every other write queued behind it)."""

    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner

    async def claim(self, owner_id: str, run_id: str, holder: str, ttl: timedelta) -> run_pb2.Run:
        """Claim one of the owner's runs unless it has ended or a live lease holds it."""

        def work(connection: Connection) -> run_pb2.Run:
            row = _locked(connection, owner_id, run_id)
            now = timeutil.now()
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            if _lease_live(row, now):
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} is held by a live lease")
            return _set(connection, _TAKE, row, _taken(row, holder, ttl, now))

        return await self._runner.write(work)

    async def claim_runnable(
        self,
        holder: str,
        max_runs: int,
        ttl: timedelta,
        *,
        reclaim_held: bool = False,
        driven: Collection[str] = (),
    ) -> list[run_pb2.Run]:
        """Claim up to `max_runs` runnable runs of any owner, oldest first (with `reclaim_held`, also the running
        runs whose live lease `holder` holds), except the runs in `driven` (the caller drives them now)."""

        def work(connection: Connection) -> list[run_pb2.Run]:
            now = timeutil.now()
            free = or_(RunRow.lease_expire_time.is_(None), RunRow.lease_expire_time <= now)
            if reclaim_held:
                free = or_(free, RunRow.lease_holder == holder)
            runnable = or_(
                RunRow.state == run_pb2.RUN_STATE_QUEUED,
                and_(RunRow.state == run_pb2.RUN_STATE_RUNNING, free),
            )
            if driven:
                runnable = and_(runnable, RunRow.id.not_in(list(driven)))
            rows = connection.execute(
                select(RunRow.__table__)
                .where(runnable)
                .order_by(RunRow.create_time, RunRow.id)
                .limit(max_runs)
                .with_for_update(skip_locked=True)
            ).all()
            return [_set(connection, _TAKE, row, _taken(row, holder, ttl, now)) for row in rows]

        return await self._runner.write(work)

    async def expire_paused(self, max_runs: int) -> list[tuple[run_pb2.Run, run_event_pb2.RunEvent]]:
        """End up to `max_runs` paused runs of any owner whose pause deadline passed, earliest first, in one
        transaction: each moves to expired with a new epoch and a run_expired event (saying what it waited for).
        The runs and their events (with seq and time). A run claimed (resumed) first is no longer paused and is
        left alone; rows another transaction holds are skipped, so no run is ended twice."""

        def work(connection: Connection) -> list[tuple[run_pb2.Run, run_event_pb2.RunEvent]]:
            now = timeutil.now()
            rows = connection.execute(
                select(RunRow.__table__)
                .where(
                    RunRow.state == run_pb2.RUN_STATE_PAUSED,
                    RunRow.pause_expire_time.is_not(None),
                    RunRow.pause_expire_time <= now,
                )
                .order_by(RunRow.pause_expire_time, RunRow.id)
                .limit(max_runs)
                .with_for_update(skip_locked=True)
            ).all()
            ended = []
            for row in rows:
                expired = run_event_pb2.RunExpired(
                    reason=row.pause_reason, expire_time=timeutil.timestamp(row.pause_expire_time)
                )
                event = run_event_pb2.RunEvent(run_expired=expired)
                values = _expired(row, now)
                connection.execute(_INSERT_EVENT, [event_values(row.id, values["last_event_seq"], event, now)])
                run = _set(connection, _EXPIRE, row, values)
                announce_sync(connection, row.id)
                event.run_id, event.seq = row.id, values["last_event_seq"]
                event.create_time.FromDatetime(now)
                ended.append((run, event))
            return ended

        return await self._runner.write(work)

    async def heartbeat(self, owner_id: str, run_id: str, epoch: int, ttl: timedelta) -> tuple[run_pb2.Run, datetime]:
        """Extend a held lease to now + ttl; LEASE_LOST if it was released or another holder claimed it."""

        def work(connection: Connection) -> tuple[run_pb2.Run, datetime]:
            row = _locked_fenced(connection, owner_id, run_id, epoch)
            if not row.lease_holder or row.state != run_pb2.RUN_STATE_RUNNING:
                raise failed_precondition("LEASE_LOST", f"run {run_id} holds no lease")
            now = timeutil.now()
            values = {"lease_holder": row.lease_holder, "lease_expire_time": now + ttl, "update_time": now}
            return _set(connection, _LEASE, row, values), now + ttl

        return await self._runner.write(work)

    async def release(self, owner_id: str, run_id: str, epoch: int) -> run_pb2.Run:
        """Give up a held lease; the run keeps its state and is claimable at once."""

        def work(connection: Connection) -> run_pb2.Run:
            row = _locked_fenced(connection, owner_id, run_id, epoch)
            values = {"lease_holder": "", "lease_expire_time": None, "update_time": timeutil.now()}
            return _set(connection, _LEASE, row, values)

        return await self._runner.write(work)
