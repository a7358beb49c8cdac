"""Schema migrations (Alembic), run in-process on the store's own engine.

The store calls `upgrade_to_head` at start-up; the `alembic` command line
(services/store/alembic.ini) goes through `run_migration` too, so both take the
same locks and the same SQLite precautions:

- SQLite: foreign keys are switched off around the migration transaction, as SQLite's
  own recipe for table rebuilds asks. Batch operations rebuild a table by copy, drop and
  rename; with foreign keys on, dropping a parent table deletes (ON DELETE CASCADE) every
  child row. `PRAGMA foreign_key_check` must come back empty before the commit. The
  engine's `BEGIN IMMEDIATE` holds the write lock for the whole migration, so concurrent
  start-ups queue and the later ones find the schema at head.
- Postgres: DDL is transactional, and a transaction-scoped advisory lock serialises
  concurrent start-ups the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# pg_advisory_xact_lock key held while migrating; any fixed 64-bit number ("steward" in ASCII).
POSTGRES_LOCK_KEY = 0x73746577617264


def alembic_config(url: str | None = None) -> Config:
    """The store's Alembic configuration; `url` (if given) is the database the command line migrates."""
    config = Config(str(ALEMBIC_INI))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    return config


async def run_migration(engine: AsyncEngine, operation: Callable[[Connection], None]) -> None:
    """Run `operation` on one connection of `engine`, in one transaction committed only on success."""
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_set_sqlite_foreign_keys, enabled=False)
        try:
            async with connection.begin():
                if connection.dialect.name == "postgresql":
                    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
                await connection.run_sync(operation)
                if sqlite:
                    await connection.run_sync(_check_sqlite_foreign_keys)
        finally:
            if sqlite:
                await connection.run_sync(_set_sqlite_foreign_keys, enabled=True)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the database behind `engine` to the newest revision (a no-op when it is there)."""
    config = alembic_config()

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    await run_migration(engine, upgrade)


def _set_sqlite_foreign_keys(connection: Connection, *, enabled: bool) -> None:
    # On the driver's cursor: through SQLAlchemy the statement would first open a transaction,
    # and SQLite ignores this pragma inside one.
    cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        raise RuntimeError(f"migration left rows with dangling foreign keys (table, rowid, parent): {violations[:10]}")
