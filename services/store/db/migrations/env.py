"""Alembic environment for the store's database (SQLite or Postgres).

Two ways in:
- In-process (store start-up, tests): the caller shares an open sync connection through
  `config.attributes["connection"]` and owns its transaction (services/store/db/migrate.py).
  Alembic's async template would call `asyncio.run()`, which fails inside a running loop.
- The `alembic` command line: the store's own engine is made for `sqlalchemy.url`, else
  STEWARD_DATABASE_URL, else the SQLite file <STEWARD_DATA_DIR or data>/steward.db, and
  the migration runs under `asyncio.run` with the same locks as start-up.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from services.store.db.engine import create_engine
from services.store.db.migrate import include_name, run_migration
from services.store.db.models import Base

config = context.config
target_metadata = Base.metadata
shared_connection: Connection | None = config.attributes.get("connection")

# Logging is configured from alembic.ini on the command line only, never inside the store.
if shared_connection is None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL the command line migrates, resolved like the store's own setting."""
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("STEWARD_DATABASE_URL")
    if url:
        return url
    data_dir = Path(os.environ.get("STEWARD_DATA_DIR") or "data")
    return f"sqlite+aiosqlite:///{(data_dir / 'steward.db').resolve()}"


def configure(**options: Any) -> None:
    # Batch mode is rendered whatever backend autogenerate compares against: every revision must
    # also run on SQLite, whose ALTER TABLE needs batch operations; on Postgres they are plain ALTERs.
    # include_name: the database may be shared with other services; compare only the store's tables.
    context.configure(
        target_metadata=target_metadata, include_name=include_name, render_as_batch=True, compare_type=True, **options
    )


def run_migrations_offline() -> None:
    """Write the SQL to stdout (`alembic upgrade head --sql`) instead of running it."""
    configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(database_url())
    try:
        await run_migration(engine, do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif shared_connection is not None:
    do_run_migrations(shared_connection)
else:
    asyncio.run(run_async_migrations())
