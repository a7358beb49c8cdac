"""The store under test, once per backend: SQLite (a file) and Postgres (a fresh database).

Postgres is found at STEWARD_TEST_POSTGRES_DSN (default: the CI machine's
127.0.0.1:5432, trust auth); each session creates its own database and drops it
afterwards. Without a reachable Postgres the lane is skipped locally and fails
on CI (CI=true), so CI always runs both.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.engine import create_engine, create_sessionmaker
from services.store.server import create_server
from services.store.settings import StoreSettings
from steward.auth import SERVICE_PREFIX
from steward.rpc.server import GrpcServer
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.support.backends import drop_database_url, fresh_database_url
from tests.support.grpc_helpers import principal_metadata

Metadata = tuple[tuple[str, str], ...]


@dataclass
class StoreUnderTest:
    backend: str
    database_url: str
    secret: str
    server: GrpcServer
    channel: grpc.aio.Channel

    def user(self, name: str = "") -> Metadata:
        """Call metadata for a fresh (or the named) user."""
        return principal_metadata(self.secret, name or f"user-{uuid.uuid4().hex}")

    def service(self, name: str = "tests") -> Metadata:
        """Call metadata for a service acting on its own account."""
        return principal_metadata(self.secret, f"{SERVICE_PREFIX}{name}")

    @property
    def identity(self) -> pb_grpc.IdentityServiceAsyncStub:
        return pb_grpc.IdentityServiceStub(self.channel)

    @property
    def agents(self) -> pb_grpc.AgentServiceAsyncStub:
        return pb_grpc.AgentServiceStub(self.channel)

    @property
    def conversations(self) -> pb_grpc.ConversationServiceAsyncStub:
        return pb_grpc.ConversationServiceStub(self.channel)

    @property
    def runs(self) -> pb_grpc.RunServiceAsyncStub:
        return pb_grpc.RunServiceStub(self.channel)


async def drop_postgres_database(url: str) -> None:
    await drop_database_url(url)


async def database_url_for(backend: str, tmp: Path) -> str:
    return await fresh_database_url(backend, tmp, "store.db")


def store_settings(database_url: str, secret: str, data_dir: Path, **overrides: object) -> StoreSettings:
    values: dict[str, object] = {
        "internal_secret": secret,
        "token_pepper": "pepper-" + "p" * 40,
        "database_url": database_url,
        "data_dir": data_dir,
        "log_json": False,
        "retention_interval": 0,
    }
    values.update(overrides)
    return StoreSettings.model_validate(values)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StoreUnderTest]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"store-{backend}")
    url = await database_url_for(backend, tmp)
    secret = secrets.token_urlsafe(32)
    server = await create_server(store_settings(url, secret, tmp), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield StoreUnderTest(backend, url, secret, server, channel)
    finally:
        await channel.close()
        await server.stop(0.5)
        if backend == "postgres":
            await drop_postgres_database(url)


@asynccontextmanager
async def direct_sessions(store: StoreUnderTest) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the store's own database, for tests that must move time or inspect rows."""
    engine = create_engine(store.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
