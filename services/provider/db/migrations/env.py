"""Alembic environment for the provider service's database: see steward.migrations.run_env."""

from services.provider.db.migrate import MIGRATIONS

MIGRATIONS.run_env()
