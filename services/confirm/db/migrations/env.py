"""Alembic environment for the confirm service's database: see steward.migrations.run_env."""

from services.confirm.db.migrate import MIGRATIONS

MIGRATIONS.run_env()
