"""Alembic environment for the confirm service's database: see steward.migrations.run_env."""

from services.confirm.db.migrate import VERSION_TABLE, run_migration
from services.confirm.db.models import Base
from steward.migrations import run_env

run_env(metadata=Base.metadata, run_migration=run_migration, sqlite_file="confirm.db", version_table=VERSION_TABLE)
