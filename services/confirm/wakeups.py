"""Cross-replica wake-ups on Postgres: every transaction that puts a decision on the feed calls
`pg_notify` (sent at commit), and each confirm replica LISTENs on one asyncpg connection.

If the connection drops it is reopened with backoff; meanwhile streams still re-read the feed
every `live_poll_seconds`, so a lost notification delays a decision but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from services.confirm.db.publish import NOTIFY_CHANNEL
from services.confirm.notifier import FeedNotifier

log = structlog.get_logger(__name__)
RECONNECT_MAX_SECONDS = 5.0


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN for a `postgresql+asyncpg://` SQLAlchemy URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWakeups:
    def __init__(self, dsn: str, notifier: FeedNotifier) -> None:
        self._dsn = dsn
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, _payload: str) -> None:
        self._notifier.notify()

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place."""
        self._task = asyncio.create_task(self._run(), name="confirm-wakeups")
        await asyncio.wait_for(self._listening.wait(), 30)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _c, closed=closed: closed.set())
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self._listening.set()
                # Decisions committed while no one listened: let the streams re-read now.
                self._notifier.notify()
                delay = 0.1
                await closed.wait()
                log.warning("confirm_wakeups_connection_lost")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("confirm_wakeups_connect_failed", error_type=type(exc).__name__)
            finally:
                if connection is not None and not connection.is_closed():
                    await connection.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
