"""Schema migrations (Alembic), run in-process on the confirm service's own engine.

The service calls `upgrade_to_head` at start-up; the `alembic` command line
(services/confirm/alembic.ini) goes through `run_migration` too, so both take the same
locks and the same SQLite precautions (steward.migrations explains them).

The confirm service may share its database with other services: its revisions are versioned
in its own table, `confirm_alembic_version`, its Postgres advisory lock is its own, and
Alembic compares only the confirm service's tables (`include_name`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.confirm.db.models import Base
from steward import migrations

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
VERSION_TABLE = "confirm_alembic_version"
# pg_advisory_xact_lock key held while the confirm service migrates.
POSTGRES_LOCK_KEY = migrations.advisory_lock_key(VERSION_TABLE)
# Alembic's include_name hook: only the confirm service's tables are compared (autogenerate, `alembic check`).
include_name = migrations.include_only(Base.metadata)


def alembic_config(url: str | None = None) -> Config:
    """The confirm service's Alembic configuration; `url` (if given) is the database the command line migrates."""
    return migrations.alembic_config(ALEMBIC_INI, url)


async def run_migration(engine: AsyncEngine, operation: Callable[[Connection], None]) -> None:
    """Run `operation` on one connection of `engine`, in one transaction committed only on success."""
    await migrations.run_migration(engine, operation, lock_key=POSTGRES_LOCK_KEY)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the database behind `engine` to the newest revision (a no-op when it is there)."""
    await migrations.upgrade_to_head(engine, alembic_config(), lock_key=POSTGRES_LOCK_KEY)
