"""Run a unit of work, written once as a sync function of a Connection, in one transaction.

For Postgres the function runs through `AsyncConnection.run_sync` on the
asyncpg engine. For SQLite it runs with a synchronous engine, so the whole
transaction costs at most one thread hop instead of one per statement (the
aiosqlite driver hops for every statement, which made the event log's hot
paths ten times slower). The same pragmas and `BEGIN IMMEDIATE` rules apply
(see engine.py).

A SQLite write is first tried at once, on the event loop, on a connection
that never waits for the write lock: its units of work are short (well under
a millisecond of statements), and the thread hop cost more than that at the
tail. If another connection holds the lock (a write on the writer thread, the
ORM's connection, another process), it goes to the dedicated writer thread,
which waits for the lock as usual. The loop therefore never blocks on a lock,
and a unit of work never waits on the loop while holding it. Reads use their
own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.db.engine import READ_ONLY, configure_sqlite

T = TypeVar("T")
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
Work = Callable[[Connection], T]


class _LockHeldError(Exception):
    """Another connection holds SQLite's write lock."""


def _no_waiting(dbapi_connection: Any, _record: Any) -> None:
    """After configure_sqlite's pragmas: this connection fails at once on a held lock instead of waiting."""
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def _write_at_once(engine: Engine, work: Work[T]) -> T:
    """`work` in a write transaction now, on this thread; _LockHeldError when the write lock cannot be had at once."""
    with engine.connect() as connection:
        try:
            transaction = connection.begin()  # BEGIN IMMEDIATE: takes the write lock, or fails
        except OperationalError as exc:
            if isinstance(exc.orig, sqlite3.OperationalError) and exc.orig.sqlite_errorcode in _BUSY:
                raise _LockHeldError from None
            raise
        with transaction:
            return work(connection)


class TransactionRunner:
    """Runs units of work as write or read-only transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})
        self._sync: Engine | None = None
        self._at_once: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            url = make_url(str(engine.url.render_as_string(hide_password=False))).set(drivername="sqlite")
            self._sync = configure_sqlite(
                create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_reset_on_return=None)
            )
            # The same database for writes tried at once: no busy timeout, so a held lock is an immediate error.
            self._at_once = configure_sqlite(
                create_engine(url, connect_args={"timeout": 0, "check_same_thread": False}, pool_reset_on_return=None)
            )
            event.listen(self._at_once, "connect", _no_waiting)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite-writer")
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite-reader")

    async def write(self, work: Work[T]) -> T:
        """Run `work` in a write transaction (committed if it returns, rolled back if it raises)."""
        if self._sync is not None and self._writer is not None and self._at_once is not None:
            with contextlib.suppress(_LockHeldError):  # the lock is held: wait for it on the writer thread
                return _write_at_once(self._at_once, work)
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
        for engine in (self._sync, self._at_once):
            if engine is not None:
                engine.dispose()
