"""Agents left on a model route that no longer exists: reported at start, and to administrators over HTTP.

An agent's model route is checked when the agent is created or changed (gateway/routes/models.py), but the routes
file (`STEWARD_ROUTES_FILE`) may change afterwards and take away a route stored agents name; their runs would then
fail MODEL_NOT_FOUND with nothing said before. So at start the gateway compares the routes every user's agents name
(the store's AgentService/ListAgentModelRoutes, for services only) with what the provider has (ListModelRoutes, by
`route_problem`) and logs one warning, `agents_on_unknown_routes`, naming each unknown route, how many agents name it
and a few of them with their owners. It does so in the background, again while the store or the provider is
unreachable, and never holds up serving. Every replica does it; each logs the same warning.

`GET /api/v1/admin/orphaned-agents` answers the same comparison, made when asked, to administrators (the dev user
and `admin_users`; a scoped token also needs the `admin` scope).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import structlog
from aiohttp import web

from gateway.app_keys import CLIENTS, Clients
from gateway.auth.bearer import acting_as
from gateway.background import start_beside_serving
from gateway.routes.keys import require_admin
from gateway.routes.models import route_problem
from steward.auth import service_principal
from steward.errors import StewardError
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # between tries at start while a service is unreachable, then 30 s
EXAMPLES = 5  # example agents per unknown route
Orphans = tuple[list[dict[str, Any]], bool]
CHECK_TASK = web.AppKey("route_orphans_task", asyncio.Task[Orphans | None])


async def orphaned_agents(clients: Clients) -> Orphans:
    """The routes stored agents name that the provider does not have, each with its agent count and a few agents;
    and whether the store left routes out (more than it lists at once)."""
    with acting_as(service_principal("gateway")):
        named = await clients.agents.ListAgentModelRoutes(store_pb.ListAgentModelRoutesRequest(max_examples=EXAMPLES))
        existing = await clients.provider.ListModelRoutes(provider_pb.ListModelRoutesRequest())
    orphans = [
        {
            "model_route": use.model_route,
            "agents": use.agent_count,
            "examples": [{"id": e.id, "name": e.name, "owner": e.owner_id} for e in use.examples],
        }
        for use in named.routes
        if route_problem(existing, use.model_route) is not None
    ]
    return orphans, named.truncated


async def check_at_start(app: web.Application) -> Orphans | None:
    """Compare once both services answer (see the module docstring); what was found, or None when a service refused
    (logged)."""
    attempt = 0
    while True:
        try:
            orphans, truncated = await orphaned_agents(app[CLIENTS])
        except StewardError as error:
            if error.code != grpc.StatusCode.UNAVAILABLE:
                log.error("agent_routes_not_checked", reason=error.reason, detail=error.message)
                return None
            wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            log.info("agent_routes_check_waits", detail=error.message, retry_seconds=wait)
            attempt += 1
            await asyncio.sleep(wait)
            continue
        if orphans:
            log.warning(
                "agents_on_unknown_routes",
                routes=[
                    {
                        "model_route": o["model_route"],
                        "agents": o["agents"],
                        "examples": [f"{e['name']} (owner {e['owner']})" for e in o["examples"]],
                    }
                    for o in orphans
                ],
                agents=sum(o["agents"] for o in orphans),
                truncated=truncated,
                hint="their runs fail MODEL_NOT_FOUND: restore the routes or change the agents' model_route",
            )
        return orphans, truncated


@routes.get("/api/v1/admin/orphaned-agents")
async def list_orphaned_agents(request: web.Request) -> web.Response:
    """The model routes agents of every user name that do not exist (administrators only)."""
    require_admin(request, "see every user's agents")
    orphans, truncated = await orphaned_agents(request.app[CLIENTS])
    return web.json_response({"routes": orphans, "truncated": truncated})


def install(app: web.Application) -> None:
    """Check the agents' routes at start (after the gRPC clients are up)."""
    start_beside_serving(app, CHECK_TASK, check_at_start)
