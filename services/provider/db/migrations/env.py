"""Alembic environment for the provider's database: see steward.migrations.run_env."""

from services.provider.db.migrate import VERSION_TABLE, run_migration
from services.provider.db.models import Base
from steward.migrations import run_env

run_env(metadata=Base.metadata, run_migration=run_migration, sqlite_file="provider.db", version_table=VERSION_TABLE)
