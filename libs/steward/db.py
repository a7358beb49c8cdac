"""Engine creation for SQLite (embedded default) and Postgres (asyncpg).

SQLite runs in WAL mode with a busy timeout, and every write transaction starts
with `BEGIN IMMEDIATE`, so read-modify-write code cannot lose updates and writers
queue instead of failing with "database is locked". Connections with the
`READ_ONLY` execution option start with a plain (deferred) `BEGIN`: in WAL mode
they read a snapshot without taking the write lock, so live readers never queue
behind writers.

Used by every service that owns a database (store, provider, confirm); the
gateway and the runtime never import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

__all__ = ["READ_ONLY", "configure_sqlite", "create_engine", "create_sessionmaker"]

READ_ONLY = "steward_read_only"


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`, with SQLite configured for safe concurrent writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every session ends in commit or rollback, so the pool's extra rollback on return is skipped.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)
    configure_sqlite(engine.sync_engine)
    return engine


E = TypeVar("E", bound=Engine)


def configure_sqlite(engine: E) -> E:
    """WAL, busy timeout, foreign keys; BEGIN IMMEDIATE for writes, a deferred BEGIN for reads."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """The process's session factory for units of work that may write."""
    return async_sessionmaker(engine, expire_on_commit=False)
