"""The store service's server: `create_server` for production and tests alike."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.agents_servicer import agents_servicer
from services.store.conversations_servicer import ConversationServicer
from services.store.db.conversations import ConversationRepository
from services.store.db.engine import create_engine, create_schema, create_sessionmaker
from services.store.db.leases import LeaseRepository
from services.store.db.retention import RetentionRepository
from services.store.db.run_rows import NOTIFY_CHANNEL
from services.store.db.run_writes import RunWriteRepository
from services.store.db.runner import TransactionRunner
from services.store.db.runs import RunRepository
from services.store.identity_servicer import identity_servicer
from services.store.notifier import EventNotifier
from services.store.runs_servicer import RunServicer
from services.store.settings import StoreSettings
from steward import timeutil
from steward.auth import verifier_for
from steward.pg_wakeups import PostgresWakeups, asyncpg_dsn
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

DOMAIN = "store.steward"
log = structlog.get_logger(__name__)


async def _retention_loop(sessions: async_sessionmaker[AsyncSession], settings: StoreSettings) -> None:
    retention = RetentionRepository(sessions)
    while True:
        try:
            compacted = await retention.compact(timeutil.now() - timedelta(days=settings.retention_days))
            if compacted:
                log.info("runs_compacted", runs=compacted)
        except Exception:
            log.exception("retention_failed")
        await asyncio.sleep(settings.retention_interval)


async def create_server(settings: StoreSettings, address: str) -> GrpcServer:
    """Open (and migrate) the database and start serving every store service on `address`."""
    url = settings.resolved_database_url()
    engine = create_engine(url)
    await create_schema(engine)
    sessions = create_sessionmaker(engine)
    runner = TransactionRunner(engine)
    notifier = EventNotifier()
    wakeups = None
    if engine.dialect.name == "postgresql":
        wakeups = PostgresWakeups(asyncpg_dsn(url), NOTIFY_CHANNEL, notifier.notify, name="store")
    if wakeups is not None:
        await wakeups.start()
    conversations = ConversationServicer(ConversationRepository(sessions, runner))
    runs = RunServicer(
        RunRepository(sessions, runner),
        LeaseRepository(runner),
        RunWriteRepository(sessions, runner),
        notifier,
        settings.live_poll_seconds,
    )
    identity = identity_servicer(sessions, settings.token_pepper.get_secret_value().encode())
    agents = agents_servicer(sessions, runner)
    server = await start_grpc_server(
        [
            registration(pb, pb_grpc, "IdentityService", identity),
            registration(pb, pb_grpc, "AgentService", agents),
            registration(pb, pb_grpc, "ConversationService", conversations),
            # A run's followers end with UNAVAILABLE (SHUTTING_DOWN) when the server drains, and follow on elsewhere.
            registration(pb, pb_grpc, "RunService", runs, feeds=("StreamRunEvents",)),
        ],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )
    retention = (
        asyncio.create_task(_retention_loop(sessions, settings), name="store-retention")
        if settings.retention_interval > 0
        else None
    )

    async def close() -> None:
        if retention is not None:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
        if wakeups is not None:
            await wakeups.stop()
        await asyncio.to_thread(runner.close)
        await engine.dispose()

    server.on_stop.append(close)
    return server


async def main() -> None:
    settings = StoreSettings()
    await serve_main("store", settings, create_server, settings.store_address)
