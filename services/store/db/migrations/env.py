"""Alembic environment for the store service's database: see steward.migrations.run_env."""

from services.store.db.migrate import MIGRATIONS

MIGRATIONS.run_env()
