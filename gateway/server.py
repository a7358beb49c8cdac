"""Run the gateway until SIGTERM/SIGINT, then drain (gateway.draining) and shut down gracefully."""

from __future__ import annotations

from aiohttp import web

from gateway.app import create_app
from gateway.draining import drain
from gateway.settings import GatewaySettings
from steward.logs import configure_logging
from steward.rpc.server import wait_for_shutdown_signal


async def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    app = create_app(settings)
    # The drain pause comes out of the grace: from SIGTERM, the gateway is done within `shutdown_grace`.
    in_flight = max(0.0, settings.shutdown_grace - settings.drain_pause)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=in_flight)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
    await site.start()
    try:
        await wait_for_shutdown_signal()
        await drain(app, settings.drain_pause)
    finally:
        # The listener closes, then the requests in flight have what is left of the grace to finish.
        await runner.cleanup()
