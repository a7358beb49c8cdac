"""Alembic migrations run in-process, shared by every service that owns a database.

Each service keeps its own Alembic environment (services/<name>/alembic.ini and
db/migrations); this module holds the parts that do not depend on the service. Start-up
calls `upgrade_to_head`; the `alembic` command line goes through `run_migration` too, so
both take the same locks and the same SQLite precautions:

- SQLite: foreign keys are switched off around the migration transaction, as SQLite's
  own recipe for table rebuilds asks. Batch operations rebuild a table by copy, drop and
  rename; with foreign keys on, dropping a parent table deletes (ON DELETE CASCADE) every
  child row. `PRAGMA foreign_key_check` must come back empty before the commit. The
  engine's `BEGIN IMMEDIATE` (steward.db) holds the write lock for the whole migration,
  so concurrent start-ups queue and the later ones find the schema at head.
- Postgres: DDL is transactional, and a transaction-scoped advisory lock serialises
  concurrent start-ups the same way. Each service takes its own key
  (`advisory_lock_key`), so services sharing one database do not wait for each other.

Services may share one database (the embedded default can put them in one SQLite file):
each one keeps its own version table and compares only its own tables (`include_only`),
so autogenerate never proposes dropping another service's tables.

Alembic's `context` and `op` are process-wide proxies, so two migrations interleaving on
one event loop (say two services started in one process, on different databases or
lock keys) would run each other's operations: within a process, migrations take turns.

Used by the services with a database; the gateway and the runtime never import it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import IncludeNameFn, NameFilterParentNames, NameFilterType
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ServiceMigrations"]

# One lock per event loop: the migrations of this process take turns (see the module docstring).
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def alembic_config(ini_path: Path, url: str | None = None) -> Config:
    """The Alembic configuration in `ini_path`; `url` (if given) is the database the command line migrates."""
    config = Config(str(ini_path))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    return config


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit pg_advisory_xact_lock key for `name` (e.g. a service's version table)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"steward-migrate").digest()
    return int.from_bytes(digest, "big", signed=True)


def include_only(metadata: MetaData) -> IncludeNameFn:
    """An `include_name` filter: of the tables in the database, compare only those of `metadata`."""
    tables = frozenset(metadata.tables)

    def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
        if type_ == "table":
            return name in tables
        return True  # schemas, and the columns, indexes and constraints of included tables

    return include_name


async def run_migration(engine: AsyncEngine, operation: Callable[[Connection], None], *, lock_key: int) -> None:
    """Run `operation` on one connection of `engine`, in one transaction committed only on success.

    On Postgres the transaction first takes the advisory lock `lock_key` (one per service).
    """
    async with _turn(), engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_set_sqlite_foreign_keys, enabled=False)
        try:
            async with connection.begin():
                if connection.dialect.name == "postgresql":
                    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
                await connection.run_sync(operation)
                if sqlite:
                    await connection.run_sync(_check_sqlite_foreign_keys)
        finally:
            if sqlite:
                await connection.run_sync(_set_sqlite_foreign_keys, enabled=True)


async def upgrade_to_head(engine: AsyncEngine, config: Config, *, lock_key: int) -> None:
    """Bring the database behind `engine` to the newest revision of `config` (a no-op when it is there)."""

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    await run_migration(engine, upgrade, lock_key=lock_key)


@dataclass(frozen=True)
class ServiceMigrations:
    """One service's migrations: its Alembic environment, version table, lock and default SQLite file.

    A service's db/migrate.py makes one and exports its methods; its Alembic env.py calls `run_env`.
    """

    ini_path: Path
    metadata: MetaData
    sqlite_file: str
    version_table: str = "alembic_version"
    lock_key: int | None = None  # default: derived from the version table (advisory_lock_key)

    @property
    def postgres_lock_key(self) -> int:
        return advisory_lock_key(self.version_table) if self.lock_key is None else self.lock_key

    def include_name(self) -> IncludeNameFn:
        return include_only(self.metadata)

    def alembic_config(self, url: str | None = None) -> Config:
        """The service's Alembic configuration; `url` (if given) is the database the command line migrates."""
        return alembic_config(self.ini_path, url)

    async def run_migration(self, engine: AsyncEngine, operation: Callable[[Connection], None]) -> None:
        """Run `operation` on one connection of `engine`, in one transaction committed only on success."""
        await run_migration(engine, operation, lock_key=self.postgres_lock_key)

    async def upgrade_to_head(self, engine: AsyncEngine) -> None:
        """Bring the database behind `engine` to the newest revision (a no-op when it is there)."""
        await upgrade_to_head(engine, self.alembic_config(), lock_key=self.postgres_lock_key)

    def run_env(self) -> None:
        """The body of the service's Alembic env.py."""
        run_env(
            metadata=self.metadata,
            run_migration=self.run_migration,
            sqlite_file=self.sqlite_file,
            version_table=self.version_table,
        )


def _turn() -> asyncio.Lock:
    """This event loop's migration lock: Alembic's proxies allow one migration at a time per process."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    return lock


def _set_sqlite_foreign_keys(connection: Connection, *, enabled: bool) -> None:
    # On the driver's cursor: through SQLAlchemy the statement would first open a transaction,
    # and SQLite ignores this pragma inside one.
    cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # stubs: Optional; a checked-out connection has one
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        raise RuntimeError(f"migration left rows with dangling foreign keys (table, rowid, parent): {violations[:10]}")


def run_env(
    *,
    metadata: MetaData,
    run_migration: Callable[[AsyncEngine, Callable[[Connection], None]], Awaitable[None]],
    sqlite_file: str,
    version_table: str = "alembic_version",
) -> None:
    """The body of a service's Alembic `env.py`, for the three ways migrations run:

    - in-process (service start-up, tests): the caller shares an open sync connection through
      `config.attributes["connection"]` and owns its transaction (`ServiceMigrations`);
    - the `alembic` command line: an engine is made for `sqlalchemy.url`, else
      STEWARD_DATABASE_URL, else the SQLite file <STEWARD_DATA_DIR or data>/`sqlite_file`, and
      migrated through `run_migration` (the same locks and SQLite precautions as start-up);
    - offline (`--sql`): the SQL is written to stdout.

    The database may be shared with other services: each service keeps its own
    `version_table`, and autogenerate and `alembic check` compare only its own tables.
    """
    from alembic import context  # only importable while Alembic runs an env.py

    from steward.db import create_engine

    config = context.config
    shared: Connection | None = config.attributes.get("connection")
    if shared is None and config.config_file_name is not None:  # logging is the command line's only
        fileConfig(config.config_file_name, disable_existing_loggers=False)

    def database_url() -> str:
        url = config.get_main_option("sqlalchemy.url") or os.environ.get("STEWARD_DATABASE_URL")
        if url:
            return url
        data_dir = Path(os.environ.get("STEWARD_DATA_DIR") or "data")
        return f"sqlite+aiosqlite:///{(data_dir / sqlite_file).resolve()}"

    def configure(**options: Any) -> None:
        # Batch mode whatever backend autogenerate compares against: every revision must also run
        # on SQLite, whose ALTER TABLE needs batch operations; on Postgres they are plain ALTERs.
        context.configure(
            target_metadata=metadata,
            version_table=version_table,
            include_name=include_only(metadata),
            render_as_batch=True,
            compare_type=True,
            **options,
        )

    def migrate(connection: Connection) -> None:
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()

    async def migrate_command_line() -> None:
        engine = create_engine(database_url())
        try:
            await run_migration(engine, migrate)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    elif shared is not None:
        migrate(shared)
    else:
        asyncio.run(migrate_command_line())
