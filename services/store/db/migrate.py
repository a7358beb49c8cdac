"""Schema migrations (Alembic), run in-process on the store's own engine.

The store calls `upgrade_to_head` at start-up; the `alembic` command line
(services/store/alembic.ini) goes through `run_migration` too, so both take the
same locks and the same SQLite precautions (steward.migrations explains them).
The store's revisions live in db/migrations, versioned in the table `alembic_version`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.db.models import Base
from steward import migrations

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# pg_advisory_xact_lock key held while the store migrates ("steward" in ASCII). Kept from before
# the shared module so store processes of older and newer builds still exclude each other.
POSTGRES_LOCK_KEY = 0x73746577617264
# Alembic's include_name hook: only the store's tables are compared, for a database shared with
# other services (each keeps its own version table; the store's is Alembic's default, alembic_version).
include_name = migrations.include_only(Base.metadata)


def alembic_config(url: str | None = None) -> Config:
    """The store's Alembic configuration; `url` (if given) is the database the command line migrates."""
    return migrations.alembic_config(ALEMBIC_INI, url)


async def run_migration(engine: AsyncEngine, operation: Callable[[Connection], None]) -> None:
    """Run `operation` on one connection of `engine`, in one transaction committed only on success."""
    await migrations.run_migration(engine, operation, lock_key=POSTGRES_LOCK_KEY)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the database behind `engine` to the newest revision (a no-op when it is there)."""
    await migrations.upgrade_to_head(engine, alembic_config(), lock_key=POSTGRES_LOCK_KEY)
