"""The store's TransactionRunner on SQLite: a write goes at once, on the loop, when the write lock is free, and
to the writer thread when another connection holds it; the loop never waits for the lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from services.store.db.engine import create_engine, create_schema
from services.store.db.runner import TransactionRunner


@pytest.fixture
async def sqlite_runner(tmp_path: Path) -> AsyncIterator[tuple[TransactionRunner, Path]]:
    path = tmp_path / "runner.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    runner = TransactionRunner(engine)
    try:
        yield runner, path
    finally:
        runner.close()
        await engine.dispose()


def _insert(title: str) -> Callable[[Connection], str]:
    def work(connection: Connection) -> str:
        connection.execute(
            text(
                "INSERT INTO conversations (id, owner_id, title, agent_id, last_message_seq, create_time, update_time)"
                " VALUES (:id, 'u', :title, '', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {"id": title, "title": title},
        )
        return threading.current_thread().name

    return work


async def test_a_write_with_the_lock_free_runs_at_once_on_the_loop(
    sqlite_runner: tuple[TransactionRunner, Path],
) -> None:
    runner, path = sqlite_runner
    assert await runner.write(_insert("free")) == threading.current_thread().name
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT title FROM conversations").fetchall() == [("free",)]


async def test_a_write_while_another_connection_holds_the_lock_waits_on_the_writer_thread(
    sqlite_runner: tuple[TransactionRunner, Path],
) -> None:
    runner, path = sqlite_runner
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer (another process, the ORM's connection) holds the lock
    try:
        write = asyncio.create_task(runner.write(_insert("queued")))
        started = time.monotonic()
        await asyncio.sleep(0.2)  # the loop goes on while the write waits for the lock
        assert time.monotonic() - started < 1.0
        assert not write.done()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await asyncio.wait_for(write, 10)).startswith("store-sqlite-writer")
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT title FROM conversations").fetchall() == [("queued",)]
