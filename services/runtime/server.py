"""The runtime service's server: `create_server` for production and tests alike."""

from __future__ import annotations

from services.runtime.loop import RunLoop
from services.runtime.servicer import RuntimeServicer
from services.runtime.settings import RuntimeSettings
from steward.auth import TokenSigner, verifier_for
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.rpc.channels import create_channel
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import store_service_pb2_grpc as store_grpc

DOMAIN = "runtime.steward"
ACTOR = "runtime"


async def create_server(settings: RuntimeSettings, address: str) -> GrpcServer:
    """Connect to the store and provider and start serving RuntimeService on `address`."""
    secret = settings.internal_secret.get_secret_value()
    signer = TokenSigner(secret, issuer=ACTOR)
    store_channel = create_channel(settings.store_address, "store", signer=signer, actor=ACTOR)
    provider_channel = create_channel(settings.provider_address, "provider", signer=signer, actor=ACTOR)
    runs = store_grpc.RunServiceStub(store_channel)
    loop = RunLoop(
        settings,
        runs=runs,
        conversations=store_grpc.ConversationServiceStub(store_channel),
        provider=provider_grpc.ProviderServiceStub(provider_channel),
    )
    servicer = RuntimeServicer(runs, loop)  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    server = await start_grpc_server(
        [registration(pb, pb_grpc, "RuntimeService", servicer)],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )

    async def close() -> None:
        await servicer.shutdown()
        await store_channel.close()
        await provider_channel.close()

    server.on_stop.append(close)
    return server


async def main() -> None:
    settings = RuntimeSettings()
    await serve_main("runtime", settings, create_server, settings.runtime_address)
