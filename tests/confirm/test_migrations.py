"""The confirm service's Alembic migrations on SQLite and Postgres: one head, a schema equal to the models,
a round trip, no drift, and its own version table and lock beside the other services'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import String, column, inspect, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.confirm.db import migrate as confirm
from services.confirm.db.models import Base, FeedHeadRow
from services.provider.db import migrate as provider
from services.store.db import migrate as store
from steward.db import create_engine
from tests.support.backends import BACKENDS, drop_database_url, fresh_database_url


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = await fresh_database_url(request.param, tmp_path)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        await drop_database_url(url)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def _differences(engine: AsyncEngine) -> list[Any]:
    def differences(connection: Connection) -> list[Any]:
        opts = {"compare_type": True, "version_table": confirm.VERSION_TABLE, "include_name": confirm.include_name}
        return list(compare_metadata(MigrationContext.configure(connection, opts=opts), Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(differences)


async def _version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        query = select(column("version_num", String)).select_from(table(confirm.VERSION_TABLE))
        return list((await connection.execute(query)).scalars())


def test_there_is_exactly_one_head_and_an_own_version_table_and_lock() -> None:
    assert len(ScriptDirectory.from_config(confirm.alembic_config()).get_heads()) == 1
    assert confirm.VERSION_TABLE == "confirm_alembic_version"
    assert confirm.POSTGRES_LOCK_KEY not in (store.POSTGRES_LOCK_KEY, provider.POSTGRES_LOCK_KEY)


async def test_upgrade_creates_the_models_schema_and_seeds_the_feed_head(engine: AsyncEngine) -> None:
    await confirm.upgrade_to_head(engine)
    await confirm.upgrade_to_head(engine)  # a no-op at head
    assert await _tables(engine) == set(Base.metadata.tables) | {confirm.VERSION_TABLE}
    assert await _differences(engine) == []
    assert await _version(engine) == [ScriptDirectory.from_config(confirm.alembic_config()).get_current_head()]
    async with engine.connect() as connection:
        heads = (await connection.execute(select(FeedHeadRow.id, FeedHeadRow.last_cursor))).all()
    assert [tuple(row) for row in heads] == [(1, 0)]


async def test_downgrade_to_base_and_upgrade_again_round_trips(engine: AsyncEngine) -> None:
    await confirm.upgrade_to_head(engine)
    config = confirm.alembic_config()

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await confirm.run_migration(engine, downgrade)
    assert await _tables(engine) == {confirm.VERSION_TABLE}
    await confirm.upgrade_to_head(engine)
    assert await _differences(engine) == []


async def test_confirm_shares_a_database_with_the_store_and_the_provider(engine: AsyncEngine) -> None:
    for upgrade in (store.upgrade_to_head, confirm.upgrade_to_head, provider.upgrade_to_head):
        await upgrade(engine)
    assert await _differences(engine) == []  # and so proposes dropping none of the others' tables
    assert set(Base.metadata.tables) <= await _tables(engine)
