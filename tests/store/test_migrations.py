"""The store's Alembic migrations on SQLite and Postgres: one head, a schema equal to the models, a round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.db.engine import create_engine
from services.store.db.migrate import alembic_config, run_migration, upgrade_to_head
from services.store.db.models import Base
from tests.store.conftest import database_url_for, drop_postgres_database

# Per table: primary key, indexes, unique constraints and foreign keys, by name (and columns).
Schema = dict[str, dict[str, Any]]


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The store's engine over a fresh, empty database."""
    backend: str = request.param
    url = await database_url_for(backend, tmp_path)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        if backend == "postgres":
            await drop_postgres_database(url)


def _model_schema() -> Schema:
    return {
        table.name: {
            "pk": (table.primary_key.name, [c.name for c in table.primary_key.columns]),
            "indexes": {(ix.name, tuple(c.name for c in ix.columns), ix.unique) for ix in table.indexes},
            "uniques": {
                (c.name, tuple(col.name for col in c.columns))
                for c in table.constraints
                if isinstance(c, UniqueConstraint)
            },
            "fks": {
                (fk.name, tuple(fk.column_keys), fk.referred_table.name, fk.ondelete)
                for fk in table.foreign_key_constraints
            },
        }
        for table in Base.metadata.tables.values()
    }


def _reflect(connection: Connection) -> Schema:
    inspector = inspect(connection)
    schema: Schema = {}
    for name in inspector.get_table_names():
        if name == "alembic_version":
            continue
        pk = inspector.get_pk_constraint(name)
        schema[name] = {
            "pk": (pk["name"], pk["constrained_columns"]),
            "indexes": {  # Postgres also lists the indexes behind unique constraints
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(name)
                if "duplicates_constraint" not in ix
            },
            "uniques": {(uq["name"], tuple(uq["column_names"])) for uq in inspector.get_unique_constraints(name)},
            "fks": {
                (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"], fk["options"].get("ondelete"))
                for fk in inspector.get_foreign_keys(name)
            },
        }
    return schema


async def _schema(engine: AsyncEngine) -> Schema:
    async with engine.connect() as connection:
        return await connection.run_sync(_reflect)


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


def test_there_is_exactly_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_upgrade_from_empty_creates_the_models_schema(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    assert await _table_names(engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert await _schema(engine) == _model_schema()


async def test_upgrade_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    await upgrade_to_head(engine)
    assert await _schema(engine) == _model_schema()


async def test_downgrade_to_base_and_upgrade_again_round_trips(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    config = alembic_config()

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await run_migration(engine, downgrade)
    assert await _table_names(engine) == {"alembic_version"}
    await upgrade_to_head(engine)
    assert await _schema(engine) == _model_schema()


async def test_head_has_no_drift_from_the_models(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_sqlite_table_rebuild_keeps_child_rows_and_foreign_keys_stay_on(tmp_path: Path) -> None:
    """A batch rebuild drops and recreates the table; with foreign keys on, that would cascade-delete children."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO conversations VALUES ('c1', 'o1', '', '', NULL, 1, '2026-01-01', '2026-01-01')")
            )
            await connection.execute(
                text("INSERT INTO messages VALUES ('m1', 'c1', 'o1', 1, 1, '[]', '', NULL, '2026-01-01')")
            )

        def rebuild_conversations(connection: Connection) -> None:
            with Operations(MigrationContext.configure(connection)).batch_alter_table(
                "conversations", recreate="always"
            ):
                pass

        await run_migration(engine, rebuild_conversations)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM messages"))).scalar_one() == 1
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await engine.dispose()
