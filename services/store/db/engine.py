"""The store's engine: the shared factory (steward.db) plus the store's own migrations and sessions.

Store sessions read without taking SQLite's write lock. A session used without `session.begin()` only reads
(every write in the store is inside `async with session.begin()`), so on SQLite its autobegun transaction is a
plain, deferred `BEGIN` (a snapshot in WAL mode, concurrent with writes); a `session.begin()` block takes the
write lock up front (`BEGIN IMMEDIATE`, steward.db). Without this every read through the ORM queued on the
write lock behind every write, and under load waited in SQLite's busy handler, which sleeps.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, AsyncSessionTransaction, async_sessionmaker
from sqlalchemy.orm import Session

from services.store.db.migrate import upgrade_to_head
from steward.db import READ_ONLY as READ_ONLY
from steward.db import configure_sqlite as configure_sqlite
from steward.db import create_engine as create_engine

_WRITING = "steward_writing"


class _SyncSession(Session):
    """Binds a transaction begun by autobegin (a read) to the read-only variant of its engine."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        bind = super().get_bind(*args, **kwargs)
        if self.info.get(_WRITING) or not isinstance(bind, Engine):
            return bind
        read_only = self.info.get("read_only_bind")
        if read_only is None or read_only[0] is not bind:
            read_only = (bind, bind.execution_options(**{READ_ONLY: True}))
            self.info["read_only_bind"] = read_only
        return read_only[1]


class StoreSession(AsyncSession):
    """An AsyncSession whose `begin()` marks the transaction as a write (see the module docstring)."""

    sync_session_class = _SyncSession

    def begin(self) -> AsyncSessionTransaction:
        self.sync_session.info[_WRITING] = True
        return super().begin()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The store's session factory: reads without the write lock, `session.begin()` blocks with it."""
    return async_sessionmaker(engine, class_=StoreSession, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision (services/store/db/migrations)."""
    await upgrade_to_head(engine)
