"""Typed application keys (AppKeys): what the gateway's handlers, installers and surfaces share on the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from grpc_health.v1 import health_pb2_grpc

from gateway.problems import HttpError
from gateway.settings import GatewaySettings
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import store_service_pb2_grpc as store_grpc


@dataclass(frozen=True)
class Clients:
    """Stubs for the services the gateway talks to."""

    conversations: store_grpc.ConversationServiceAsyncStub
    runs: store_grpc.RunServiceAsyncStub
    agents: store_grpc.AgentServiceAsyncStub
    identity: store_grpc.IdentityServiceAsyncStub
    provider: provider_grpc.ProviderServiceAsyncStub
    runtime: runtime_grpc.RuntimeServiceAsyncStub
    confirm: confirm_grpc.ConfirmationServiceAsyncStub
    health: dict[str, health_pb2_grpc.HealthStub]


Challenge = Callable[[web.Request, HttpError], HttpError]


@dataclass
class Access:
    """What authentication leaves open, as the installers register it: what is served without a token (and not
    rate limited), by path or by route template (the web app's), and per path a hook that adds to a refusal's
    challenge (`/mcp` names its RFC 9728 metadata).
    """

    public_paths: set[str] = field(default_factory=set)
    challenges: dict[str, Challenge] = field(default_factory=dict)
    public_routes: set[str] = field(default_factory=set)  # route templates (canonical) served without a token

    def is_public(self, request: web.Request) -> bool:
        """Whether `request` is served without a token (and without a rate limit): by its path or its route."""
        if request.path in self.public_paths:
            return True
        resource = request.match_info.route.resource
        return resource is not None and resource.canonical in self.public_routes


SETTINGS = web.AppKey("settings", GatewaySettings)
CLIENTS = web.AppKey("clients", Clients)
ACCESS = web.AppKey("access", Access)


# What /readyz reports beside the services, by name: the state ("serving" when ready) of a part of the app that
# runs on its own (the MCP session manager). Each part registers itself when it is installed.
READINESS = web.AppKey("readiness", dict[str, Callable[[], str]])
