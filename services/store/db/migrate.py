"""The store's schema migrations (Alembic), run in-process on its own engine.

The store calls `upgrade_to_head` at start-up; the `alembic` command line (services/store/alembic.ini)
goes through `run_migration` too, so both take the same locks and the same SQLite precautions
(steward.migrations explains them). Its revisions live in db/migrations,
versioned in Alembic's default table, `alembic_version`.
"""

from __future__ import annotations

from pathlib import Path

from services.store.db.models import Base
from steward import migrations

MIGRATIONS = migrations.ServiceMigrations(
    ini_path=Path(__file__).resolve().parent.parent / "alembic.ini",
    metadata=Base.metadata,
    sqlite_file="steward.db",
    version_table="alembic_version",
    # "steward" in ASCII: kept from before the shared module, so store processes of older and newer
    # builds still exclude each other.
    lock_key=0x73746577617264,
)
VERSION_TABLE = MIGRATIONS.version_table
POSTGRES_LOCK_KEY = MIGRATIONS.postgres_lock_key
include_name = MIGRATIONS.include_name()
alembic_config = MIGRATIONS.alembic_config
run_migration = MIGRATIONS.run_migration
upgrade_to_head = MIGRATIONS.upgrade_to_head
