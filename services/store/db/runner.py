"""Run a unit of work, written once as a sync function of a Connection, in one transaction.

For Postgres the function runs through `AsyncConnection.run_sync` on the
asyncpg engine. For SQLite it runs on a dedicated thread with a synchronous
engine, so the whole transaction costs one thread hop instead of one per
statement (the aiosqlite driver hops for every statement, which made the event
log's hot paths ten times slower). The same pragmas and `BEGIN IMMEDIATE` rules
apply (see engine.py); writes are serialized on one thread, reads use another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.db.engine import READ_ONLY, configure_sqlite

T = TypeVar("T")
Work = Callable[[Connection], T]


class TransactionRunner:
    """Runs units of work as write or read-only transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})
        self._sync: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            url = make_url(str(engine.url.render_as_string(hide_password=False))).set(drivername="sqlite")
            self._sync = configure_sqlite(
                create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_reset_on_return=None)
            )
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite-writer")
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite-reader")

    async def write(self, work: Work[T]) -> T:
        """Run `work` in a write transaction (committed if it returns, rolled back if it raises)."""
        if self._sync is not None and self._writer is not None:
            sync = self._sync

            def run() -> T:
                with sync.begin() as connection:
                    return work(connection)

            return await asyncio.get_running_loop().run_in_executor(self._writer, run)
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def read(self, work: Work[T]) -> T:
        """Run `work` in a read-only transaction (a snapshot; no write lock on SQLite)."""
        if self._sync is not None and self._reader is not None:
            sync = self._sync.execution_options(**{READ_ONLY: True})

            def run() -> T:
                with sync.connect() as connection, connection.begin():
                    return work(connection)

            return await asyncio.get_running_loop().run_in_executor(self._reader, run)
        async with self._read_engine.connect() as connection, connection.begin():
            return await connection.run_sync(work)

    def close(self) -> Any:
        """Stop the threads and close the synchronous engine (SQLite only)."""
        for executor in (self._writer, self._reader):
            if executor is not None:
                executor.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()
