"""The confirm service's sessions: writes (BEGIN IMMEDIATE on SQLite), reads (a WAL snapshot), and
the wake-up for the local WatchDecisions streams once a decision is committed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from steward.db import READ_ONLY, create_sessionmaker


class Notifier(Protocol):
    """What a committed decision wakes (services.confirm.notifier.FeedNotifier; db/ does not import it)."""

    def notify(self) -> None: ...


@dataclass(frozen=True)
class Database:
    writes: async_sessionmaker[AsyncSession]
    reads: async_sessionmaker[AsyncSession]
    notifier: Notifier


def open_database(engine: AsyncEngine, notifier: Notifier) -> Database:
    read_engine = engine.execution_options(**{READ_ONLY: True})
    reads: async_sessionmaker[Any] = async_sessionmaker(read_engine, expire_on_commit=False)
    return Database(writes=create_sessionmaker(engine), reads=reads, notifier=notifier)
