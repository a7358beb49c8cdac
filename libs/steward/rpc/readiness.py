"""Calls wait a little for a service that is away: a restart costs its callers a pause, not an error.

While a service restarts (drains, exits, starts again), its callers' channel fails to connect and then waits
before trying again (at most 2 s, `channels.py`): a call made meanwhile would fail at once with UNAVAILABLE, a
503 for the gateway's caller, though the service is back a moment later. So before a call starts, a channel that
is not connected is given up to `within` seconds to connect (it is asked to try at once). Nothing is sent before
then, so this is safe for every call, idempotent or not. A service still away after that: the call goes ahead and
fails as it would have, so a dependency that is down answers 503 after `within` seconds, not never.

Health checks do not wait: a probe must learn at once that a service is away.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

__all__ = ["Readiness"]

_NO_WAIT_PREFIXES = ("/grpc.health.v1.Health/",)


class Readiness:
    """Waits, for the calls of one channel (set with `bind` once the channel is made), until it is connected."""

    def __init__(self, within: float) -> None:
        self._within = within
        self._channel: grpc.aio.Channel | None = None

    def bind(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """One interceptor per call kind (grpc.aio files each object under one kind only)."""
        return [_UnaryUnaryReady(self), _UnaryStreamReady(self)]

    async def wait(self, details: grpc.aio.ClientCallDetails) -> None:
        channel = self._channel
        if channel is None or self._within <= 0:
            return
        method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
        if method.startswith(_NO_WAIT_PREFIXES):
            return
        state = channel.get_state(try_to_connect=True)
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.SHUTDOWN):
            return
        window = self._within if details.timeout is None else min(self._within, details.timeout / 2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while state not in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.SHUTDOWN):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await channel.wait_for_state_change(state)
            except TimeoutError:
                return
            state = channel.get_state(try_to_connect=True)


class _UnaryUnaryReady(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        await self._readiness.wait(client_call_details)
        return await continuation(client_call_details, request)


class _UnaryStreamReady(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        await self._readiness.wait(client_call_details)
        return await continuation(client_call_details, request)
