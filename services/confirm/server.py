"""The confirm service's server: `create_server` for production and tests alike.

Start-up migrates the database to head, then serves ConfirmationService; a background task
sweeps overdue confirmations and trims the feed. Stopping drains the server (open WatchDecisions
streams end with UNAVAILABLE / SHUTTING_DOWN, steward.rpc.drain), then stops the sweep, the
Postgres listener and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from services.confirm.db.audit import AuditRepository
from services.confirm.db.confirmations import ConfirmationRepository
from services.confirm.db.database import open_database
from services.confirm.db.decide import DecisionRepository
from services.confirm.db.executions import ExecutionRepository
from services.confirm.db.feed import FeedRepository
from services.confirm.db.migrate import upgrade_to_head
from services.confirm.db.publish import NOTIFY_CHANNEL
from services.confirm.decisions import judge
from services.confirm.notifier import FeedNotifier
from services.confirm.servicer import ConfirmationServicer, Policy, Repositories
from services.confirm.settings import ConfirmSettings
from services.confirm.sweeper import sweep_forever
from steward.auth import verifier_for
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirm_service_pb2_grpc as pb_grpc
from steward.db import create_engine
from steward.pg_wakeups import PostgresWakeups, asyncpg_dsn
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.settings import CommonSettings

DOMAIN = "confirm.steward"


def confirm_settings(settings: CommonSettings) -> ConfirmSettings:
    """`settings` as ConfirmSettings: the confirm service's own fields take their defaults when absent."""
    if isinstance(settings, ConfirmSettings):
        return settings
    return ConfirmSettings.model_validate(settings.model_dump())


async def create_server(settings: CommonSettings, address: str) -> GrpcServer:
    """Open (and migrate) the database and start serving ConfirmationService on `address`."""
    config = confirm_settings(settings)
    url = config.resolved_database_url()
    engine = create_engine(url)
    await upgrade_to_head(engine)
    notifier = FeedNotifier()
    database = open_database(engine, notifier)
    wakeups = None
    if engine.dialect.name == "postgresql":
        # Decisions committed while no one listened: each (re)connection lets the streams re-read.
        wakeups = PostgresWakeups(
            asyncpg_dsn(url),
            NOTIFY_CHANNEL,
            lambda _payload: notifier.notify(),
            name="confirm",
            log_prefix="confirm_wakeups",
            on_listen=notifier.notify,
        )
    if wakeups is not None:
        await wakeups.start()
    confirmations = ConfirmationRepository(database)
    feed = FeedRepository(database)
    servicer = ConfirmationServicer(
        Repositories(
            confirmations=confirmations,
            decisions=DecisionRepository(database, judge),
            feed=feed,
            executions=ExecutionRepository(database),
            audit=AuditRepository(database),
        ),
        notifier,
        Policy(config.default_ttl_seconds, config.max_ttl_seconds, config.live_poll_seconds),
    )
    # The decision feed is a feed: it ends with UNAVAILABLE (SHUTTING_DOWN) when the server drains.
    server = await start_grpc_server(
        [registration(pb, pb_grpc, "ConfirmationService", servicer, feeds=("WatchDecisions",))],
        address,
        verifier=verifier_for(config),
        domain=DOMAIN,
    )
    retention = timedelta(seconds=config.feed_retention_seconds)
    sweeper = (
        asyncio.create_task(sweep_forever(confirmations, feed, retention, config.sweep_interval), name="confirm-sweep")
        if config.sweep_interval > 0
        else None
    )

    async def close() -> None:
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if wakeups is not None:
            await wakeups.stop()
        await engine.dispose()

    server.on_stop.append(close)
    return server


async def main() -> None:
    settings = ConfirmSettings()
    await serve_main("confirm", settings, create_server, settings.confirm_address)
