"""Retention: compact the event logs of runs that ended long ago.

Text and reasoning deltas are the bulk of a log; once a run has ended, its
final messages hold that text, so after the retention period the deltas are
deleted and `compacted_through_seq` records how far. The other events keep
their seqs. A reader whose cursor lies before that point gets CURSOR_EXPIRED
instead of a log with silent holes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.models import RunEventRow, RunRow
from services.store.db.run_rows import TERMINAL_STATES

COMPACTED_KINDS = ("text_delta", "reasoning_delta")
BATCH = 100


class RetentionRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def compact(self, ended_before: datetime) -> int:
        """Compact every run that ended before `ended_before` and still has deltas; how many were."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                rows = (
                    await session.scalars(
                        select(RunRow)
                        .where(
                            RunRow.state.in_(TERMINAL_STATES),
                            RunRow.end_time < ended_before,
                            RunRow.compacted_through_seq < RunRow.last_event_seq,
                            select(RunEventRow.seq)
                            .where(RunEventRow.run_id == RunRow.id, RunEventRow.kind.in_(COMPACTED_KINDS))
                            .exists(),
                        )
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                for run in rows:
                    deltas = (RunEventRow.run_id == run.id) & RunEventRow.kind.in_(COMPACTED_KINDS)
                    through = await session.scalar(select(func.max(RunEventRow.seq)).where(deltas))
                    await session.execute(delete(RunEventRow).where(deltas))
                    run.compacted_through_seq = max(run.compacted_through_seq, int(through or 0))
            total += len(rows)
            if len(rows) < BATCH:
                return total
