"""Cross-replica wake-ups on Postgres: LISTEN on the channel writes NOTIFY at commit.

Each store replica keeps one asyncpg connection listening; a notification
wakes that replica's live readers of the run. If the connection drops, it is
re-opened with backoff; meanwhile readers still re-read the log every
`live_poll_seconds`, so a lost notification delays an event but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from services.store.db.run_rows import NOTIFY_CHANNEL
from services.store.notifier import EventNotifier

log = structlog.get_logger(__name__)
RECONNECT_MAX_SECONDS = 5.0


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN for a `postgresql+asyncpg://` SQLAlchemy URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWakeups:
    def __init__(self, dsn: str, notifier: EventNotifier) -> None:
        self._dsn = dsn
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._notifier.notify(payload)

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place."""
        self._task = asyncio.create_task(self._run(), name="store-wakeups")
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
                delay = 0.1
                await closed.wait()
                log.warning("wakeups_connection_lost")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("wakeups_connect_failed", error_type=type(exc).__name__)
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
