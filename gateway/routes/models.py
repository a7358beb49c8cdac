"""Model routes over HTTP: GET /api/v1/model-routes, and the check that an agent's model route exists.

A model route is what an agent's `model_route` names: a named route of the deployment (the routes file, `demo`,
and `auto`, the first provider with a key) or a model of a configured provider as `provider/model`. The listing
says for each whether the caller could use it now (their key, the instance's, or a provider that needs none) and
what `auto` and the others would pick for them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.app_keys import CLIENTS
from gateway.problems import HttpError
from steward.errors import Reason
from steward.provider.v1 import key_pb2, model_route_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb

routes = web.RouteTableDef()

_KEY_SCOPES = {key_pb2.KEY_SCOPE_USER: "user", key_pb2.KEY_SCOPE_INSTANCE: "instance"}


def _target(target: model_route_pb2.ModelTarget) -> str:
    return f"{target.provider}/{target.model}"


def route_json(route: model_route_pb2.ModelRoute) -> dict[str, Any]:
    return {
        "name": route.name,
        "description": route.description,
        "primary": _target(route.primary),
        "fallbacks": [_target(t) for t in route.fallbacks],
        "available": route.available,
        "selected": _target(route.selected) if route.HasField("selected") else None,
        # Whose key the selected model would use: "user", "instance", or null (a provider that needs none).
        "selected_key": _KEY_SCOPES.get(route.selected_key_scope) if route.HasField("selected") else None,
    }


def provider_json(provider: model_route_pb2.ModelProvider) -> dict[str, Any]:
    return {"name": provider.name, "keyless": provider.keyless, "available": provider.available}


@routes.get("/api/v1/model-routes")
async def list_model_routes(request: web.Request) -> web.Response:
    """The deployment's named routes and the providers whose models a route may name as `provider/model`."""
    reply = await request.app[CLIENTS].provider.ListModelRoutes(provider_pb.ListModelRoutesRequest())
    return web.json_response(
        {
            "routes": [route_json(route) for route in reply.routes],
            "providers": [provider_json(provider) for provider in reply.providers],
        }
    )


def route_problem(routes: provider_pb.ListModelRoutesResponse, route: str) -> str | None:
    """What is wrong with `route` given the provider's routes and providers; None when it names a route or a
    configured provider's model."""
    names = sorted(r.name for r in routes.routes)
    providers = sorted(p.name for p in routes.providers)
    provider, _, model = route.partition("/")
    if route in names or (model and provider in providers):
        return None
    return (
        f"no model route {route!r}; name one of the routes {', '.join(names)}, or a model as "
        f"provider/model with a provider of {', '.join(providers)} (GET /api/v1/model-routes lists them)"
    )


async def check_model_route(request: web.Request, route: str) -> None:
    """400 MODEL_NOT_FOUND, naming what exists, unless `route` names a route or a configured provider's model."""
    reply = await request.app[CLIENTS].provider.ListModelRoutes(provider_pb.ListModelRoutesRequest())
    problem = route_problem(reply, route)
    if problem is not None:
        raise HttpError(400, Reason.MODEL_NOT_FOUND, f"model_route: {problem}")
