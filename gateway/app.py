"""create_app: the gateway's aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from grpc_health.v1 import health_pb2_grpc

from gateway import draining, metrics, openapi, openapi_responses, openapi_validation, ratelimit
from gateway.app_keys import ACCESS, CLIENTS, READINESS, SETTINGS, Access, Clients
from gateway.auth import bearer
from gateway.mcp import endpoint as mcp_endpoint
from gateway.middlewares import MIDDLEWARES, request_id_middleware
from gateway.openai_api import routes as openai_routes
from gateway.routes import (
    agent_files,
    budgets,
    confirmations,
    conversations,
    keys,
    models,
    ops,
    route_orphans,
    runs,
    session,
    tools,
    usage,
)
from gateway.routes import web as web_app
from gateway.routes.agents import routes as agent_routes
from gateway.routes.tokens import routes as token_routes
from gateway.settings import GatewaySettings
from steward.auth import TokenSigner
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.rpc.channels import create_channel
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import store_service_pb2_grpc as store_grpc

ISSUER = "gateway"


def create_app(settings: GatewaySettings) -> web.Application:
    """The gateway application; its gRPC channels open on startup and close on cleanup."""
    app = web.Application(middlewares=_middlewares(settings), client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ACCESS] = Access()
    app[READINESS] = {}
    draining.install(app)
    bearer.install(app)
    metrics.install(app)
    ratelimit.install(app)
    ops.install(app)
    app.router.add_routes(openapi.routes)
    openapi_validation.operations()  # compile the request validators now, not on the first request
    app.router.add_routes(conversations.routes)
    app.router.add_routes(runs.routes)
    app.router.add_routes(agent_files.routes)  # before agent_routes: /agents/apply is no agent id
    app.router.add_routes(agent_routes)
    app.router.add_routes(tools.routes)
    app.router.add_routes(confirmations.routes)
    app.router.add_routes(token_routes)
    session.install(app)
    app.router.add_routes(keys.routes)
    app.router.add_routes(models.routes)
    app.router.add_routes(route_orphans.routes)
    app.router.add_routes(usage.routes)
    app.router.add_routes(budgets.routes)
    app.router.add_routes(openai_routes)
    app.cleanup_ctx.append(_clients)
    agent_files.install(app)  # after _clients: the folder is applied through them
    route_orphans.install(app)  # after _clients: the agents' routes are checked through them
    mcp_endpoint.install(app)  # after _clients: the MCP sessions end before the channels close
    web_app.install(app)  # last: its app paths match only what no other route does
    return app


def _middlewares(settings: GatewaySettings) -> Sequence[Middleware]:
    """MIDDLEWARES, with the answers' check against the document just inside the request id when it is on."""
    if not settings.validate_responses:
        return MIDDLEWARES
    first, *rest = MIDDLEWARES
    assert first is request_id_middleware  # the check sees every answer the other middlewares make
    return [first, openapi_responses.response_validation_middleware, *rest]


async def _clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    signer = TokenSigner(settings.internal_secret.get_secret_value(), issuer=ISSUER)
    addresses = {
        "store": settings.store_address,
        "provider": settings.provider_address,
        "confirm": settings.confirm_address,
        "runtime": settings.runtime_address,
    }
    channels = {
        area: create_channel(address, area, signer=signer, ready_wait=settings.reconnect_wait)
        for area, address in addresses.items()
    }
    app[CLIENTS] = Clients(
        conversations=store_grpc.ConversationServiceStub(channels["store"]),
        runs=store_grpc.RunServiceStub(channels["store"]),
        agents=store_grpc.AgentServiceStub(channels["store"]),
        identity=store_grpc.IdentityServiceStub(channels["store"]),
        provider=provider_grpc.ProviderServiceStub(channels["provider"]),
        runtime=runtime_grpc.RuntimeServiceStub(channels["runtime"]),
        confirm=confirm_grpc.ConfirmationServiceStub(channels["confirm"]),
        health={area: health_pb2_grpc.HealthStub(channel) for area, channel in channels.items()},
    )
    yield
    for channel in channels.values():
        await channel.close()
