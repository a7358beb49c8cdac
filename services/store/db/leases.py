"""Run leases: claim one run, claim runnable runs, heartbeat, release.

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
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db import convert
from services.store.db.models import RunRow
from services.store.db.run_rows import TERMINAL_STATES, lock_fenced, lock_run
from steward import timeutil
from steward.errors import failed_precondition
from steward.store.v1 import run_pb2


def _lease_live(row: RunRow, now: datetime) -> bool:
    return bool(row.lease_holder) and row.lease_expire_time is not None and timeutil.aware(row.lease_expire_time) > now


def take(row: RunRow, holder: str, ttl: timedelta, now: datetime) -> None:
    row.lease_epoch += 1
    row.lease_holder = holder
    row.lease_expire_time = now + ttl
    row.state = run_pb2.RUN_STATE_RUNNING
    row.pause_reason = run_pb2.PAUSE_REASON_UNSPECIFIED
    row.update_time = now


class LeaseRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def claim(self, owner_id: str, run_id: str, holder: str, ttl: timedelta) -> run_pb2.Run:
        """Claim one of the owner's runs unless it has ended or a live lease holds it."""
        async with self._sessions() as session, session.begin():
            row = await lock_run(session, owner_id, run_id)
            now = timeutil.now()
            if row.state in TERMINAL_STATES:
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} has ended")
            if _lease_live(row, now):
                raise failed_precondition("RUN_STATE_CONFLICT", f"run {run_id} is held by a live lease")
            take(row, holder, ttl, now)
        return convert.run_message(row)

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
        async with self._sessions() as session, session.begin():
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
            rows = (
                await session.scalars(
                    select(RunRow)
                    .where(runnable)
                    .order_by(RunRow.create_time, RunRow.id)
                    .limit(max_runs)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                take(row, holder, ttl, now)
        return [convert.run_message(row) for row in rows]

    async def heartbeat(self, owner_id: str, run_id: str, epoch: int, ttl: timedelta) -> tuple[run_pb2.Run, datetime]:
        """Extend a held lease to now + ttl; LEASE_LOST if it was released or another holder claimed it."""
        async with self._sessions() as session, session.begin():
            row = await lock_fenced(session, owner_id, run_id, epoch)
            if not row.lease_holder or row.state != run_pb2.RUN_STATE_RUNNING:
                raise failed_precondition("LEASE_LOST", f"run {run_id} holds no lease")
            now = timeutil.now()
            row.lease_expire_time = now + ttl
            row.update_time = now
        return convert.run_message(row), now + ttl

    async def release(self, owner_id: str, run_id: str, epoch: int) -> run_pb2.Run:
        """Give up a held lease; the run keeps its state and is claimable at once."""
        async with self._sessions() as session, session.begin():
            row = await lock_fenced(session, owner_id, run_id, epoch)
            row.lease_holder = ""
            row.lease_expire_time = None
            row.update_time = timeutil.now()
        return convert.run_message(row)
