"""The gRPC server factory shared by every service and by the tests."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from steward.auth import TokenVerifier
from steward.logs import configure_logging
from steward.rpc.drain import Drain
from steward.rpc.interceptors import ServerInterceptor
from steward.settings import CommonSettings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "GrpcServer",
    "ServiceRegistration",
    "registration",
    "serve_main",
    "start_grpc_server",
    "wait_for_shutdown_signal",
]

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to serve: its descriptor, the generated add-to-server call, and its feeds (the names of its
    streaming methods that follow something without end: they end when the server drains, `steward.rpc.drain`)."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[grpc.aio.Server], None]
    feeds: tuple[str, ...] = ()

    def feed_paths(self) -> frozenset[str]:
        for name in self.feeds:
            method = self.descriptor.methods_by_name[name]  # KeyError: a feed the service does not have
            if not method.server_streaming:
                raise ValueError(f"{self.descriptor.full_name}/{name} is not a stream")
        return frozenset(f"/{self.descriptor.full_name}/{name}" for name in self.feeds)


def registration(
    messages: ModuleType, services: ModuleType, name: str, servicer: Any, *, feeds: tuple[str, ...] = ()
) -> ServiceRegistration:
    """Serve `servicer` as service `name` of a generated `*_pb2` / `*_pb2_grpc` module pair."""
    add = getattr(services, f"add_{name}Servicer_to_server")
    return ServiceRegistration(messages.DESCRIPTOR.services_by_name[name], lambda server: add(servicer, server), feeds)


@dataclass
class GrpcServer:
    """A started server, its bound port, its health servicer and its drain."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    drain: Drain = field(default_factory=Drain)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace: float, *, pause: float = 0.0) -> None:
        """Drain, then release resources (ADR 0015), within `grace` seconds in all: report NOT_SERVING, keep serving
        for `pause` seconds (health checks and load balancers see it before the listener closes), end the feeds
        with UNAVAILABLE, close the listener and let in-flight calls finish in what is left of the grace (gRPC ends
        what is still running then with UNAVAILABLE)."""
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("draining", pause=pause, grace=grace)
        if pause > 0:
            await asyncio.sleep(pause)
        self.drain.begin()
        began = time.monotonic()
        await self.server.stop(max(0.0, grace - pause))
        log.info("drained", seconds=round(time.monotonic() - began, 3))
        for callback in reversed(self.on_stop):
            await callback()
        log.info("stopped", seconds=round(time.monotonic() - began, 3))


async def start_grpc_server(
    registrations: Sequence[ServiceRegistration],
    address: str,
    *,
    verifier: TokenVerifier,
    domain: str,
) -> GrpcServer:
    """Start a server on `address` ("host:0" picks a free port) with health and reflection."""
    drain = Drain()
    feeds = frozenset().union(*(r.feed_paths() for r in registrations))
    server = grpc.aio.server(
        interceptors=[ServerInterceptor(verifier, domain, drain=drain, feeds=feeds)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    for registration in registrations:
        registration.add_to_server(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.descriptor.full_name for r in registrations]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc_server_started", address=address, port=port, services=names)
    return GrpcServer(server=server, port=port, health=health_servicer, service_names=names, drain=drain)


async def wait_for_shutdown_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve_until_signalled(server: GrpcServer, grace: float, pause: float = 0.0) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (`GrpcServer.stop`)."""
    await wait_for_shutdown_signal()
    log.info("shutting_down", grace=grace, pause=pause)
    await server.stop(grace, pause=pause)


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


async def serve_main(
    name: str,
    settings: SettingsT,
    create_server: Callable[[SettingsT, str], Awaitable[GrpcServer]],
    address: str,
) -> None:
    """A service process's main: configure logging, start on `address`, serve until signalled."""
    configure_logging(name, settings.log_level, json=settings.log_json)
    server = await create_server(settings, address)
    await serve_until_signalled(server, settings.shutdown_grace, settings.drain_pause)
