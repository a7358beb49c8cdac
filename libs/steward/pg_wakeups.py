"""Cross-replica wake-ups on Postgres: LISTEN on one channel that write transactions NOTIFY at commit.

Each replica keeps one asyncpg connection listening; a notification wakes that replica's live
readers. If the connection drops, it is re-opened with backoff; meanwhile readers still re-read
every `live_poll_seconds`, so a lost notification delays a change but never loses it.

Used by the store (run events) and the confirm service (the decision feed); the gateway and the
runtime never import it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog
from sqlalchemy.engine import make_url

__all__ = ["PostgresWakeups", "asyncpg_dsn"]

log = structlog.get_logger(__name__)
RECONNECT_MAX_SECONDS = 5.0


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq DSN for a `postgresql+asyncpg://` SQLAlchemy URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWakeups:
    """Calls `on_notify(payload)` for each notification on `channel`, and `on_listen()` each time LISTEN is
    (re)established (a service whose readers may have missed notifications while no one listened uses it).

    `name` names the task ("<name>-wakeups"); `log_prefix` starts the names of its log events.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        name: str,
        log_prefix: str = "wakeups",
        on_listen: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify_payload = on_notify
        self._on_listen = on_listen
        self._name = name
        self._log_prefix = log_prefix
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify_payload(payload)

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place."""
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-wakeups")
        await asyncio.wait_for(self._listening.wait(), 30)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _c, closed=closed: closed.set())
                await connection.add_listener(self._channel, self._on_notify)
                self._listening.set()
                if self._on_listen is not None:
                    self._on_listen()
                delay = 0.1
                await closed.wait()
                log.warning(f"{self._log_prefix}_connection_lost")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning(f"{self._log_prefix}_connect_failed", error_type=type(exc).__name__)
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
