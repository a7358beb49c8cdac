"""The store's engine: the shared factory (steward.db) plus the store's own migrations."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.db.migrate import upgrade_to_head
from steward.db import READ_ONLY as READ_ONLY
from steward.db import configure_sqlite as configure_sqlite
from steward.db import create_engine as create_engine
from steward.db import create_sessionmaker as create_sessionmaker


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision (services/store/db/migrations)."""
    await upgrade_to_head(engine)
