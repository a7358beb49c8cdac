"""The confirm service's schema migrations (Alembic), run in-process on its own engine.

The service calls `upgrade_to_head` at start-up; the `alembic` command line (services/confirm/alembic.ini)
goes through `run_migration` too, so both take the same locks and the same SQLite precautions
(steward.migrations explains them). It may share its database with
other services: its own version table and advisory lock, and Alembic compares only its tables.
"""

from __future__ import annotations

from pathlib import Path

from services.confirm.db.models import Base
from steward import migrations

MIGRATIONS = migrations.ServiceMigrations(
    ini_path=Path(__file__).resolve().parent.parent / "alembic.ini",
    metadata=Base.metadata,
    sqlite_file="confirm.db",
    version_table="confirm_alembic_version",
)
VERSION_TABLE = MIGRATIONS.version_table
POSTGRES_LOCK_KEY = MIGRATIONS.postgres_lock_key
include_name = MIGRATIONS.include_name()
alembic_config = MIGRATIONS.alembic_config
run_migration = MIGRATIONS.run_migration
upgrade_to_head = MIGRATIONS.upgrade_to_head
