"""The provider service's server: `create_server` for production and tests alike."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from pydantic import SecretStr

from services.provider.adapters.anthropic_adapter import AnthropicAdapter
from services.provider.adapters.base import Adapter
from services.provider.adapters.openai_adapter import OpenAIAdapter
from services.provider.db.migrate import upgrade_to_head
from services.provider.db.models import INSTANCE_OWNER
from services.provider.demo import DemoAdapter
from services.provider.generate import Generator
from services.provider.keys.base import KeyStore, create_key_store
from services.provider.metering import Metering
from services.provider.prices import PriceTable
from services.provider.resilience import Breakers, RetryPolicy
from services.provider.routes import DEMO_PROTOCOL, Routes
from services.provider.servicer import ProviderServicer
from services.provider.settings import ProviderSettings
from services.provider.timeouts import Timeouts
from services.provider.usage import UsageQueries
from steward.auth import verifier_for
from steward.db import create_engine, create_sessionmaker
from steward.errors import StewardError
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server

DOMAIN = "provider.steward"
log = structlog.get_logger(__name__)


RESERVATION_SWEEP_SECONDS = 60.0
# The vendors' standard variables, taken into the key store as instance keys at start.
ENVIRONMENT_KEYS = (("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY"))


async def take_environment_keys(settings: ProviderSettings, keys: KeyStore) -> list[str]:
    """Store each vendor key set in the environment as the instance's key for its provider, when it differs from
    the instance key there is (a changed variable rotates the key); the providers whose key was stored. A key
    store that cannot be reached now is logged and skipped (the next start tries again); secrets are never
    logged."""
    stored = []
    for provider, variable in ENVIRONMENT_KEYS:
        value: SecretStr | None = getattr(settings, f"{provider}_api_key")
        if value is None or not value.get_secret_value().strip():
            continue
        secret = value.get_secret_value().strip()
        try:
            if await keys.secret_for(INSTANCE_OWNER, provider) != secret:
                await keys.put(INSTANCE_OWNER, provider, f"from ${variable}", secret)
                stored.append(provider)
                log.info("instance_key_from_environment", provider=provider, variable=variable)
        except StewardError as error:
            log.warning("instance_key_from_environment_failed", provider=provider, reason=error.reason)
    return stored


async def _release_expired_reservations(metering: Metering) -> None:
    """Give back budget held by calls whose process died before settling them."""
    while True:
        try:
            released = await metering.expire_reservations()
            if released:
                log.warning("reservations_expired", count=released)
        except Exception:
            log.exception("reservation_sweep_failed")
        await asyncio.sleep(RESERVATION_SWEEP_SECONDS)


async def create_server(settings: ProviderSettings, address: str) -> GrpcServer:
    """Open the provider's database and key store and start serving ProviderService on `address`."""
    engine = create_engine(settings.resolved_database_url())
    await upgrade_to_head(engine)
    sessions = create_sessionmaker(engine)
    keys = await create_key_store(settings, sessions)
    await take_environment_keys(settings, keys)
    routes = Routes.load(
        settings.routes_file,
        openai_compatible_base_url=settings.openai_compatible_base_url,
        auto_models=settings.auto_route_models,
    )
    metering = Metering(sessions)
    anthropic, openai = AnthropicAdapter(), OpenAIAdapter()
    # The SDKs import slowly (about 1.2 s for anthropic): import them now, not on the first call.
    await anthropic.warm_up()
    await openai.warm_up()
    adapters: dict[str, Adapter] = {
        "anthropic": anthropic,
        "openai": openai,
        DEMO_PROTOCOL: DemoAdapter(settings.demo_token_interval),
    }
    generator = Generator(
        routes,
        adapters,
        keys,
        PriceTable.load(settings.prices_file, free_providers=routes.free_providers),
        metering,
        breakers=Breakers(settings.breaker_failures, settings.breaker_open_seconds),
        policy=RetryPolicy(settings.retry_max_attempts, settings.retry_base_delay, settings.retry_max_delay),
        timeouts=Timeouts(settings.first_token_timeout, settings.idle_timeout),
    )
    servicer = ProviderServicer(
        generator, routes, keys, metering, UsageQueries(sessions), coalesce_window=settings.coalesce_window
    )
    server = await start_grpc_server(
        [registration(pb, pb_grpc, "ProviderService", servicer)],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )

    sweeper = asyncio.create_task(_release_expired_reservations(metering), name="provider-reservations")

    async def close() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await anthropic.aclose()
        await openai.aclose()
        await metering.close()
        await keys.close()
        await engine.dispose()

    server.on_stop.append(close)
    return server


async def main() -> None:
    settings = ProviderSettings()
    await serve_main("provider", settings, create_server, settings.provider_address)
