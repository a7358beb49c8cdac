"""Liveness and readiness: /healthz and /readyz (no authentication)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from grpc_health.v1 import health_pb2

from gateway.app_keys import ACCESS, CLIENTS, READINESS
from gateway.draining import DRAINING
from steward.errors import StewardError

routes = web.RouteTableDef()
READY_TIMEOUT = 2.0


def install(app: web.Application) -> None:
    """Add /healthz and /readyz to `app`, served without a token."""
    app.router.add_routes(routes)
    app[ACCESS].public_paths.update({"/healthz", "/readyz"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check(stub: object) -> str:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=READY_TIMEOUT)  # type: ignore[attr-defined]
    except StewardError as error:
        return f"unreachable ({error.code.name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)).lower()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAINING].not_ready:  # stopping: at once, whatever the services say
        return web.json_response({"ready": False, "services": {"gateway": "draining"}}, status=503)
    health = request.app[CLIENTS].health
    names = sorted(health)
    results = await asyncio.gather(*(_check(health[name]) for name in names))
    services = dict(zip(names, results, strict=True))
    services.update({name: state() for name, state in request.app[READINESS].items()})
    ready = all(state == "serving" for state in services.values())
    return web.json_response({"ready": ready, "services": services}, status=200 if ready else 503)
