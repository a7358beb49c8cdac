"""The runtime service's server: `create_server` for production and tests alike."""

from __future__ import annotations

from collections.abc import Sequence

from services.runtime.hook_loading import load_hooks
from services.runtime.hooks import Hook, Hooks
from services.runtime.identity import stable_replica_id
from services.runtime.resume import Resumer
from services.runtime.run.context import Services
from services.runtime.run.loop import RunLoop
from services.runtime.servicer import RuntimeServicer
from services.runtime.settings import RuntimeSettings
from services.runtime.tools.registry_toolbox import toolbox_from_settings
from services.runtime.tools.toolbox import Toolbox
from steward.auth import TokenSigner, verifier_for
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.rpc.channels import create_channel
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import store_service_pb2_grpc as store_grpc

DOMAIN = "runtime.steward"
ACTOR = "runtime"


async def create_server(
    settings: RuntimeSettings, address: str, *, toolbox: Toolbox | None = None, hooks: Sequence[Hook] = ()
) -> GrpcServer:
    """Connect to the store, provider and confirm services, start the tools, and serve RuntimeService; `hooks` run
    after those the settings name (`HookLoadError` before anything starts when one of those cannot be loaded)."""
    configured = load_hooks(settings.hooks)
    if not settings.replica_id:
        settings = settings.model_copy(update={"replica_id": stable_replica_id(settings.data_dir)})
    secret = settings.internal_secret.get_secret_value()
    signer = TokenSigner(secret, issuer=ACTOR)
    channels = {
        name: create_channel(address_, name, signer=signer, actor=ACTOR, ready_wait=settings.reconnect_wait)
        for name, address_ in (
            ("store", settings.store_address),
            ("provider", settings.provider_address),
            ("confirm", settings.confirm_address),
        )
    }
    tools, close_tools = (toolbox, None) if toolbox is not None else await toolbox_from_settings(settings)
    services = Services(
        runs=store_grpc.RunServiceStub(channels["store"]),
        conversations=store_grpc.ConversationServiceStub(channels["store"]),
        agents=store_grpc.AgentServiceStub(channels["store"]),
        provider=provider_grpc.ProviderServiceStub(channels["provider"]),
        confirm=confirm_grpc.ConfirmationServiceStub(channels["confirm"]),
        toolbox=tools,
        hooks=Hooks([*configured, *hooks]),
        settings=settings,
    )
    loop = RunLoop(services)
    resumer = Resumer(services, loop)
    servicer = RuntimeServicer(services, loop)
    # Before serving: no run this replica creates can be among the runs it takes back (that claim would fence it).
    await resumer.reclaim(within=settings.lease_seconds)
    server = await start_grpc_server(
        [registration(pb, pb_grpc, "RuntimeService", servicer)],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )
    resumer.start()

    async def close() -> None:
        await resumer.stop()
        await loop.shutdown()
        if close_tools is not None:
            await close_tools()
        for channel in channels.values():
            await channel.close()

    server.on_stop.append(close)
    return server


async def main() -> None:
    settings = RuntimeSettings()
    await serve_main("runtime", settings, create_server, settings.runtime_address)
