"""Putting decisions on the feed, and expiry (the auto-reject that also puts one there).

Cursors come from the one `confirmation_feed_head` row: a transaction that decides takes the
next cursors with `UPDATE ... SET last_cursor = last_cursor + n RETURNING`, which holds the
row's lock until commit. Decisions therefore commit in cursor order, and a reader that sees a
cursor has already been able to see every smaller one. On Postgres the same transaction calls
`pg_notify`, delivered at commit, to wake the other replicas' streams.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db import audit
from services.confirm.db.models import FEED_HEAD_ID, ConfirmationRow, FeedEntryRow, FeedHeadRow
from steward import timeutil
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2

# The decision recorded when a confirmation expires (SURFACE_SYSTEM, no decider).
EXPIRED_REASON = "expired"
EXPIRED_DECISION_JSON = json.dumps({"outcome": "reject", "reason": EXPIRED_REASON}, separators=(",", ":"))
# Postgres channel on which every confirm replica hears that the feed grew.
NOTIFY_CHANNEL = "steward_confirm_decisions"
PENDING = confirmation_pb2.CONFIRMATION_STATE_PENDING
DECIDED_STATES = (
    confirmation_pb2.CONFIRMATION_STATE_APPROVED,
    confirmation_pb2.CONFIRMATION_STATE_REJECTED,
    confirmation_pb2.CONFIRMATION_STATE_EXPIRED,
)


async def publish(session: AsyncSession, rows: Sequence[ConfirmationRow], now: datetime) -> None:
    """Give just-decided (locked) confirmations the next cursors and their feed entries."""
    if not rows:
        return
    last = (
        await session.execute(
            update(FeedHeadRow)
            .where(FeedHeadRow.id == FEED_HEAD_ID)
            .values(last_cursor=FeedHeadRow.last_cursor + len(rows))
            .returning(FeedHeadRow.last_cursor)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    first = last - len(rows) + 1
    for offset, row in enumerate(rows):
        row.decision_cursor = first + offset
        session.add(FeedEntryRow(cursor=first + offset, confirmation_id=row.id, create_time=now))
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def overdue(row: ConfirmationRow, now: datetime) -> bool:
    """True for a pending confirmation at or past its expiry."""
    return row.state == PENDING and timeutil.aware(row.expire_time) <= now


async def expire(session: AsyncSession, rows: Sequence[ConfirmationRow], now: datetime) -> None:
    """Auto-reject overdue (locked) confirmations with a SURFACE_SYSTEM decision and put them on the feed."""
    for row in rows:
        row.state = confirmation_pb2.CONFIRMATION_STATE_EXPIRED
        row.outcome = confirmation_pb2.DECISION_OUTCOME_REJECT
        row.decision_reason = EXPIRED_REASON
        row.edited_arguments_json = ""
        row.decision_json = EXPIRED_DECISION_JSON
        row.decided_by = ""
        row.decision_surface = confirmation_pb2.SURFACE_SYSTEM
        row.decide_time = now
        row.update_time = now
        audit.record(
            session,
            row,
            audit_event_pb2.AUDIT_EVENT_KIND_EXPIRED,
            actor="",
            surface=confirmation_pb2.SURFACE_SYSTEM,
            reason="",
            now=now,
        )
    await publish(session, rows, now)
    await session.flush()  # the EXPIRED events take their seqs before anything this transaction adds later


async def expire_overdue(session: AsyncSession, now: datetime, limit: int, user_id: str | None = None) -> int:
    """Expire up to `limit` overdue confirmations (of one user, or of all); rows another writer holds are skipped."""
    query = select(ConfirmationRow).where(ConfirmationRow.state == PENDING, ConfirmationRow.expire_time <= now)
    if user_id is not None:
        query = query.where(ConfirmationRow.user_id == user_id)
    query = query.order_by(ConfirmationRow.expire_time, ConfirmationRow.id).limit(limit)
    rows = list((await session.scalars(query.with_for_update(skip_locked=True))).all())
    await expire(session, rows, now)
    return len(rows)
