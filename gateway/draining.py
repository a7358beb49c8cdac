"""The gateway's drain on SIGTERM (ADR 0015): not ready at once, serving through the pause, then streams end.

`drain` first makes /readyz answer 503 (a load balancer stops sending new requests here), keeps serving for
`drain_pause` seconds (requests that still arrive are answered), then ends the open event streams cleanly: each
SSE client reconnects with `Last-Event-ID` (to another replica, or to this one's successor) and loses nothing.
`gateway.server` then closes the listener and lets the requests in flight finish within `shutdown_grace`.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from steward.rpc.drain import Drain

__all__ = ["DRAINING", "Draining", "drain"]

log = structlog.get_logger(__name__)


class Draining:
    """Whether the gateway is stopping (`not_ready`), and the moment its event streams end (`streams`)."""

    def __init__(self) -> None:
        self.not_ready = False
        self.streams = Drain()


DRAINING = web.AppKey("draining", Draining)


def install(app: web.Application) -> None:
    app[DRAINING] = Draining()


async def drain(app: web.Application, pause: float) -> None:
    """Stop being ready, serve on for `pause` seconds, then end the event streams."""
    draining = app[DRAINING]
    draining.not_ready = True
    log.info("draining", pause=pause)
    if pause > 0:
        await asyncio.sleep(pause)
    draining.streams.begin()
