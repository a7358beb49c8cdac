"""Per-run fencing: the highest run lease epoch seen, and whether the run's confirmations were cancelled.

Every runtime write on behalf of a run (create, acknowledge, begin and finish execution) locks
the run's row first, in the same transaction as the write: a lower epoch than the highest seen
changes nothing (LEASE_LOST), a higher one is recorded. Lock order across the service is run
row, then confirmation rows, then the feed head, so concurrent writers never deadlock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db.models import RunFenceRow
from steward.errors import failed_precondition, internal


async def lock_run(session: AsyncSession, user_id: str, run_id: str, now: datetime) -> RunFenceRow:
    """The run's fence row, created when missing, locked until the transaction ends."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(RunFenceRow)
        .values(user_id=user_id, run_id=run_id, lease_epoch=0, cancelled=False, cancel_reason="", update_time=now)
        .on_conflict_do_nothing(index_elements=["user_id", "run_id"])
    )
    row = await session.scalar(
        select(RunFenceRow).where(RunFenceRow.user_id == user_id, RunFenceRow.run_id == run_id).with_for_update()
    )
    if row is None:  # inserted or already there a statement ago, in this very transaction
        raise internal()
    return row


def fence(run: RunFenceRow, epoch: int, now: datetime) -> None:
    """Refuse a stale epoch (LEASE_LOST); remember a newer one."""
    if epoch < run.lease_epoch:
        raise failed_precondition("LEASE_LOST", f"lease epoch {epoch} is stale; the run is at {run.lease_epoch}")
    if epoch > run.lease_epoch:
        run.lease_epoch = epoch
        run.update_time = now


async def lock_fenced(session: AsyncSession, user_id: str, run_id: str, epoch: int, now: datetime) -> RunFenceRow:
    """`lock_run`, then `fence`."""
    run = await lock_run(session, user_id, run_id, now)
    fence(run, epoch, now)
    return run
