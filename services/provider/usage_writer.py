"""Group commit for usage rows.

Concurrent calls each need their usage row durable before their stream ends;
written one transaction each, they queue behind SQLite's single writer. Here
every caller hands its row to one writer task and awaits that row's commit:
the writer inserts whatever has queued up meanwhile in one transaction. An idle
system commits each row at once; a busy one commits many per transaction. On
SQLite a batch is one thread hop on a synchronous connection (aiosqlite would
hop per statement: a few milliseconds at the end of every stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.provider.db.models import UsageRecordRow
from steward.db import configure_sqlite

MAX_BATCH = 500


def _sqlite_engine(sessions: async_sessionmaker[AsyncSession]) -> Engine | None:
    """A synchronous engine on the same SQLite database (None for another backend): a batch is then one thread
    hop, where aiosqlite hops once per statement (begin, insert, commit)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    url = make_url(bind.url.render_as_string(hide_password=False)).set(drivername="sqlite")
    if url.database in (None, "", ":memory:"):
        return None  # an in-memory database is per connection: only the async engine's holds the rows
    return configure_sqlite(create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}))


class UsageWriter:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sync = _sqlite_engine(sessions)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="usage-writer") if self._sync is not None else None

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self._sync is not None and self._thread is not None:
            sync = self._sync

            def insert_rows() -> None:
                with sync.begin() as connection:
                    connection.execute(insert(UsageRecordRow), rows)

            await asyncio.get_running_loop().run_in_executor(self._thread, insert_rows)
            return
        async with self._sessions() as session, session.begin():
            await session.execute(insert(UsageRecordRow), rows)

    async def write(self, row: dict[str, Any]) -> None:
        """Queue one row and return once it is committed (raising if its batch failed)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="usage-writer")
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, committed))
        await asyncio.shield(committed)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._insert([row for row, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiter gets the failure
                for _, committed in batch:
                    if not committed.done():
                        committed.set_exception(error)
            else:
                for _, committed in batch:
                    if not committed.done():
                        committed.set_result(None)
            for _ in batch:
                self._queue.task_done()

    async def close(self) -> None:
        """Stop the writer once everything queued is committed."""
        if self._task is not None and not self._task.done():
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()
