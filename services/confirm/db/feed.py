"""The decision feed: WatchDecisions reads, the sweep (ListDecidedConfirmations), acknowledgements, trimming.

Feed entries are kept `feed_retention_seconds`; trimming records the highest cursor it removed
in the head row (`pruned_through`), and a stream resuming from an older cursor is CURSOR_EXPIRED.
Unacknowledged decisions stay findable by the sweep whatever the feed keeps: their cursor is
also on the confirmation row.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import delete, func, select

from services.confirm.db import convert
from services.confirm.db.confirmations import confirmation_not_found
from services.confirm.db.database import Database
from services.confirm.db.fencing import lock_fenced
from services.confirm.db.models import FEED_HEAD_ID, ConfirmationRow, FeedEntryRow, FeedHeadRow
from services.confirm.db.publish import DECIDED_STATES
from steward import paging, timeutil
from steward.confirm.v1 import confirmation_pb2
from steward.errors import StewardError, failed_precondition, internal, invalid_argument

# A decision's cursor is unique (decided rows have one above 0): it is the whole key.
_DECISION_ORDER = paging.Keyset("decided.1", (ConfirmationRow.decision_cursor,), (False,), (int,))
_CURSOR = re.compile(r"[0-9]{1,18}")


def cursor_expired() -> StewardError:
    return failed_precondition(
        "CURSOR_EXPIRED", "the cursor is older than the retained feed: sweep, then watch from now"
    )


class FeedRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def start(self, after_cursor: str) -> int:
        """Where a stream starts: after `after_cursor`, or after the newest entry when it is empty."""
        if after_cursor and not _CURSOR.fullmatch(after_cursor):
            raise invalid_argument("after_cursor", "after_cursor is not a cursor this service issued")
        last, pruned = await self._head()
        if not after_cursor:
            return last
        cursor = int(after_cursor)
        if cursor > last:
            raise invalid_argument("after_cursor", "after_cursor is not a cursor this service issued")
        if cursor < pruned:
            raise cursor_expired()
        return cursor

    async def read_after(self, cursor: int, limit: int) -> list[tuple[int, confirmation_pb2.Confirmation]]:
        """Up to `limit` entries after `cursor`, in cursor order; CURSOR_EXPIRED if some were trimmed away."""
        async with self._db.reads() as session, session.begin():
            rows = (
                await session.execute(
                    select(FeedEntryRow.cursor, ConfirmationRow)
                    .join(ConfirmationRow, ConfirmationRow.id == FeedEntryRow.confirmation_id)
                    .where(FeedEntryRow.cursor > cursor)
                    .order_by(FeedEntryRow.cursor)
                    .limit(limit)
                )
            ).all()
            # After the entries: a trim committed between the two reads shows here, never as a silent gap.
            pruned = await session.scalar(select(FeedHeadRow.pruned_through).where(FeedHeadRow.id == FEED_HEAD_ID))
        if pruned is None:
            raise internal()
        if cursor < pruned:
            raise cursor_expired()
        return [(entry_cursor, convert.confirmation_message(row)) for entry_cursor, row in rows]

    async def list_decided(self, page_token: str, page_size: int) -> tuple[list[confirmation_pb2.Confirmation], str]:
        """Decided, unacknowledged confirmations of every user, oldest decision first."""
        query = select(ConfirmationRow).where(
            ConfirmationRow.acknowledge_time.is_(None),
            ConfirmationRow.decision_cursor > 0,
            ConfirmationRow.state.in_(DECIDED_STATES),
        )
        async with self._db.reads() as session, session.begin():
            return await paging.read_page(
                session, query, _DECISION_ORDER, page_token, page_size, convert.confirmation_message
            )

    async def acknowledge(self, user_id: str, confirmation_id: str, epoch: int) -> confirmation_pb2.Confirmation:
        """Mark a decision consumed by the run's lease holder; a repeat changes nothing."""
        now = timeutil.now()
        owned = select(ConfirmationRow).where(ConfirmationRow.id == confirmation_id, ConfirmationRow.user_id == user_id)
        async with self._db.writes() as session, session.begin():
            row = await session.scalar(owned)
            if row is None:
                raise confirmation_not_found(confirmation_id)
            await lock_fenced(session, user_id, row.run_id, epoch, now)  # the run's row before the confirmation's
            row = await session.scalar(owned.with_for_update().execution_options(populate_existing=True))
            if row is None:
                raise internal()
            if row.state not in DECIDED_STATES:
                message = f"confirmation {confirmation_id} is not decided"
                raise failed_precondition("CONFIRMATION_STATE_CONFLICT", message)
            if row.acknowledge_time is None:
                row.acknowledge_time = now
                row.update_time = now
        return convert.confirmation_message(row)

    async def prune(self, cutoff: datetime) -> int:
        """Remove feed entries made before `cutoff`; the number removed (a read first checks for any)."""
        older = select(func.max(FeedEntryRow.cursor)).where(FeedEntryRow.create_time < cutoff)
        async with self._db.reads() as session, session.begin():
            if await session.scalar(older) is None:
                return 0
        async with self._db.writes() as session, session.begin():
            head = await session.scalar(select(FeedHeadRow).where(FeedHeadRow.id == FEED_HEAD_ID).with_for_update())
            through = await session.scalar(older)
            if head is None or through is None:
                return 0
            removed = await session.execute(delete(FeedEntryRow).where(FeedEntryRow.cursor <= through))
            head.pruned_through = max(head.pruned_through, through)
        return int(getattr(removed, "rowcount", 0))

    async def _head(self) -> tuple[int, int]:
        async with self._db.reads() as session, session.begin():
            head = await session.scalar(select(FeedHeadRow).where(FeedHeadRow.id == FEED_HEAD_ID))
        if head is None:
            raise internal()
        return head.last_cursor, head.pruned_through
