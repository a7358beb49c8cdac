"""Alembic environment for the store's database: see steward.migrations.run_env."""

from services.store.db.migrate import run_migration
from services.store.db.models import Base
from steward.migrations import run_env

run_env(metadata=Base.metadata, run_migration=run_migration, sqlite_file="steward.db")
