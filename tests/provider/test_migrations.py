"""The provider's Alembic migrations on SQLite and Postgres: one head, a schema equal to the models, a round trip;
and the provider and the store sharing one database without touching each other's tables or version rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, String, UniqueConstraint, column, func, inspect, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.provider.db import migrate as provider
from services.provider.db.models import Base
from services.store.db import migrate as store
from services.store.db.models import Base as StoreBase
from steward.db import create_engine
from tests.support.backends import drop_database_url, fresh_database_url

# Per table: primary key, indexes, unique constraints and foreign keys, by name (and columns).
Schema = dict[str, dict[str, Any]]
STORE_VERSION_TABLE = "alembic_version"


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine over a fresh, empty database."""
    backend: str = request.param
    url = await fresh_database_url(backend, tmp_path)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        if backend == "postgres":
            await drop_database_url(url)


def _model_schema(metadata: MetaData) -> Schema:
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
        for table in metadata.tables.values()
    }


def _reflect(connection: Connection, tables: set[str]) -> Schema:
    inspector = inspect(connection)
    schema: Schema = {}
    for name in set(inspector.get_table_names()) & tables:
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


async def _schema(engine: AsyncEngine, metadata: MetaData = Base.metadata) -> Schema:
    """The database's schema of the tables `metadata` declares (any others are left out)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_reflect, set(metadata.tables))


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def _versions(engine: AsyncEngine, version_table: str) -> list[str]:
    async with engine.connect() as connection:
        query = select(column("version_num", String)).select_from(table(version_table))
        return list((await connection.execute(query)).scalars())


async def _differences(engine: AsyncEngine, metadata: MetaData, opts: dict[str, Any]) -> list[Any]:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True, **opts})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(differences)


def _head(config_of: Callable[[], Any]) -> str:
    head = ScriptDirectory.from_config(config_of()).get_current_head()
    assert head is not None
    return head


def test_there_is_exactly_one_head() -> None:
    assert len(ScriptDirectory.from_config(provider.alembic_config()).get_heads()) == 1


def test_the_provider_keeps_its_own_version_table_and_lock() -> None:
    assert provider.VERSION_TABLE == "provider_alembic_version"
    assert provider.POSTGRES_LOCK_KEY != store.POSTGRES_LOCK_KEY
    assert -(2**63) <= provider.POSTGRES_LOCK_KEY < 2**63  # a Postgres bigint


async def test_upgrade_from_empty_creates_the_models_schema(engine: AsyncEngine) -> None:
    await provider.upgrade_to_head(engine)
    assert await _table_names(engine) == set(Base.metadata.tables) | {provider.VERSION_TABLE}
    assert await _schema(engine) == _model_schema(Base.metadata)
    assert await _versions(engine, provider.VERSION_TABLE) == [_head(provider.alembic_config)]


async def test_upgrade_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await provider.upgrade_to_head(engine)
    await provider.upgrade_to_head(engine)
    assert await _schema(engine) == _model_schema(Base.metadata)


async def test_concurrent_upgrades_in_one_process_take_turns(engine: AsyncEngine) -> None:
    await asyncio.gather(*(provider.upgrade_to_head(engine) for _ in range(3)))
    assert await _schema(engine) == _model_schema(Base.metadata)
    assert await _versions(engine, provider.VERSION_TABLE) == [_head(provider.alembic_config)]


async def test_downgrade_to_base_and_upgrade_again_round_trips(engine: AsyncEngine) -> None:
    await provider.upgrade_to_head(engine)
    config = provider.alembic_config()

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await provider.run_migration(engine, downgrade)
    assert await _table_names(engine) == {provider.VERSION_TABLE}
    await provider.upgrade_to_head(engine)
    assert await _schema(engine) == _model_schema(Base.metadata)


async def test_head_has_no_drift_from_the_models(engine: AsyncEngine) -> None:
    await provider.upgrade_to_head(engine)
    assert await _differences(engine, Base.metadata, {"version_table": provider.VERSION_TABLE}) == []


UPGRADES: dict[str, Callable[[AsyncEngine], Awaitable[None]]] = {
    "store": store.upgrade_to_head,
    "provider": provider.upgrade_to_head,
}
SEEDS = {  # one row in a table of each service
    "store": "INSERT INTO users VALUES ('u1', 'User', 'admin', NULL, '2026-01-01')",
    "provider": "INSERT INTO budget_reservations VALUES ('r1', 'u1', '[]', 5, '2026-01-01', '2026-01-02')",
}


async def _seed(engine: AsyncEngine, service: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(SEEDS[service]))


async def _assert_seeds_kept(engine: AsyncEngine, *services: str) -> None:
    tables = {"store": "users", "provider": "budget_reservations"}
    async with engine.connect() as connection:
        for service in services:
            count = await connection.execute(select(func.count()).select_from(table(tables[service])))
            assert count.scalar_one() == 1, service


async def _assert_both_at_head_and_apart(engine: AsyncEngine) -> None:
    assert await _table_names(engine) == (
        set(Base.metadata.tables) | set(StoreBase.metadata.tables) | {provider.VERSION_TABLE, STORE_VERSION_TABLE}
    )
    assert await _versions(engine, STORE_VERSION_TABLE) == [_head(store.alembic_config)]
    assert await _versions(engine, provider.VERSION_TABLE) == [_head(provider.alembic_config)]
    assert await _schema(engine, Base.metadata) == _model_schema(Base.metadata)
    assert await _schema(engine, StoreBase.metadata) == _model_schema(StoreBase.metadata)
    # Each service's Alembic sees no drift, and in particular proposes dropping none of the other's tables.
    provider_opts = {"version_table": provider.VERSION_TABLE, "include_name": provider.include_name}
    assert await _differences(engine, Base.metadata, provider_opts) == []
    assert await _differences(engine, StoreBase.metadata, {"include_name": store.include_name}) == []


@pytest.mark.parametrize("order", [("store", "provider"), ("provider", "store")], ids="-then-".join)
async def test_store_and_provider_share_one_database(engine: AsyncEngine, order: tuple[str, str]) -> None:
    first, second = order
    await UPGRADES[first](engine)
    await _seed(engine, first)
    await UPGRADES[second](engine)
    await _seed(engine, second)
    await _assert_both_at_head_and_apart(engine)
    for service in order:  # both at head: no-ops
        await UPGRADES[service](engine)
    await _assert_seeds_kept(engine, first, second)


async def test_provider_downgrade_in_a_shared_database_leaves_the_store_alone(engine: AsyncEngine) -> None:
    await store.upgrade_to_head(engine)
    await provider.upgrade_to_head(engine)
    await _seed(engine, "store")
    config = provider.alembic_config()

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await provider.run_migration(engine, downgrade)
    assert await _table_names(engine) == set(StoreBase.metadata.tables) | {provider.VERSION_TABLE, STORE_VERSION_TABLE}
    assert await _versions(engine, STORE_VERSION_TABLE) == [_head(store.alembic_config)]
    assert await _versions(engine, provider.VERSION_TABLE) == []
    assert await _schema(engine, StoreBase.metadata) == _model_schema(StoreBase.metadata)
    await _assert_seeds_kept(engine, "store")
    await provider.upgrade_to_head(engine)
    await _assert_both_at_head_and_apart(engine)


async def test_store_and_provider_migrating_at_once_in_one_process(engine: AsyncEngine) -> None:
    """Alembic's proxies are process-wide: concurrent migrations of two services must take turns."""
    await asyncio.gather(store.upgrade_to_head(engine), provider.upgrade_to_head(engine))
    await _assert_both_at_head_and_apart(engine)


async def test_store_and_provider_migrating_separate_databases_at_once(tmp_path: Path) -> None:
    """No database lock orders these: only the in-process turns keep their Alembic runs apart."""
    engines = {name: create_engine(f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}") for name in UPGRADES}
    try:
        await asyncio.gather(*(UPGRADES[name](engines[name]) for name in UPGRADES))
        assert await _table_names(engines["store"]) == set(StoreBase.metadata.tables) | {STORE_VERSION_TABLE}
        assert await _table_names(engines["provider"]) == set(Base.metadata.tables) | {provider.VERSION_TABLE}
        assert await _schema(engines["provider"]) == _model_schema(Base.metadata)
        assert await _schema(engines["store"], StoreBase.metadata) == _model_schema(StoreBase.metadata)
    finally:
        for engine in engines.values():
            await engine.dispose()
