"""Prometheus metrics of the gateway, served at /metrics (no authentication, like /healthz and /readyz).

Requests are counted and timed per route *template* (`/api/v1/runs/{run_id}`), method and status, never per
path: ids would make every run a new series and tell anyone who can scrape which ids exist. Each app keeps its
own registry, so several apps in one process (tests, replicas) do not share counters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.app_keys import ACCESS
from gateway.auth.bearer import Handler

routes = web.RouteTableDef()
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram
    in_flight: Gauge


def _metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=registry,
        requests=Counter(
            "steward_gateway_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        ),
        seconds=Histogram(
            "steward_gateway_request_seconds",
            "Time to answer an HTTP request (for a stream: until it ended), by method and route template.",
            ["method", "route"],
            registry=registry,
        ),
        in_flight=Gauge("steward_gateway_requests_in_flight", "HTTP requests being answered.", registry=registry),
    )


METRICS = web.AppKey("metrics", Metrics)


def install(app: web.Application) -> None:
    """Give a gateway app its own metrics registry and the /metrics route (served without a token)."""
    app[METRICS] = _metrics()
    app.router.add_routes(routes)
    app[ACCESS].public_paths.add("/metrics")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request; outside the error middleware, so a problem answer counts with its status."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics.in_flight.dec()
        route = _route(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.seconds.labels(request.method, route).observe(time.perf_counter() - started)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
