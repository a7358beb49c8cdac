"""The periodic sweep: expire overdue confirmations (so paused runs resume with the auto-reject even
when nobody reads them) and trim the decision feed to its retention."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from services.confirm.db.confirmations import ConfirmationRepository
from services.confirm.db.feed import FeedRepository
from steward import timeutil

log = structlog.get_logger(__name__)


async def sweep_once(confirmations: ConfirmationRepository, feed: FeedRepository, retention: timedelta) -> None:
    """One pass: expire every overdue confirmation, then trim feed entries older than `retention`."""
    expired = await confirmations.expire_overdue()
    if expired:
        log.info("confirmations_expired", count=expired)
    trimmed = await feed.prune(timeutil.now() - retention)
    if trimmed:
        log.info("decision_feed_trimmed", entries=trimmed)


async def sweep_forever(
    confirmations: ConfirmationRepository, feed: FeedRepository, retention: timedelta, interval: float
) -> None:
    """`sweep_once` every `interval` seconds until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            await sweep_once(confirmations, feed, retention)
        except Exception:
            log.exception("confirm_sweep_failed")
        await asyncio.sleep(interval)
