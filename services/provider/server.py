"""The provider service's server: `create_server` for production and tests alike."""

from __future__ import annotations

from services.provider.servicer import ProviderServicer
from services.provider.settings import ProviderSettings
from steward.auth import verifier_for
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server

DOMAIN = "provider.steward"


async def create_server(settings: ProviderSettings, address: str) -> GrpcServer:
    """Start serving ProviderService on `address`."""
    servicer = ProviderServicer(settings.demo_token_interval)  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    return await start_grpc_server(
        [registration(pb, pb_grpc, "ProviderService", servicer)],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )


async def main() -> None:
    settings = ProviderSettings()
    await serve_main("provider", settings, create_server, settings.provider_address)
