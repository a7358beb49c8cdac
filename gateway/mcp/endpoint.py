"""`/mcp` in the aiohttp gateway: the MCP SDK's streamable HTTP session manager behind the gateway's middlewares.

- **Authentication** is the gateway's (`gateway.auth`): the same bearer tokens as every route, a 401 with
  the RFC 9728 `resource_metadata` challenge (`metadata.challenge`). The handler binds the caller to the
  request's ASGI scope: its user id for the tools (`server.USER_ID`), and as the SDK's `user`, so a
  2025-11-25 session answers only its own user (another user's session id is answered 404).
- **Both protocol revisions**: a request whose `MCP-Protocol-Version` is 2026-07-28 is served on its own
  (stateless, no `initialize`); anything else takes the 2025-11-25 path (an `initialize` handshake, then an
  `Mcp-Session-Id` session). `mcp_stateless` serves that path without sessions too (any replica answers
  any request; the server can then send the client no requests of its own, which no tool here needs).
- **Host and Origin** are checked by the SDK's DNS-rebinding protection, configured from the gateway
  settings (`hosts`): 421 for a Host, 403 for an Origin it does not allow.
- **Lifetime**: the session manager runs in one task from the app's startup to its cleanup: anyio cancel
  scopes must be left in the task that entered them, and aiohttp may run startup and cleanup in different
  tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from gateway.auth import CALLER
from gateway.keys import SETTINGS
from gateway.mcp import hosts, metadata
from gateway.mcp.bridge import AsgiBridge
from gateway.mcp.server import USER_ID, build_server

ISSUER = "steward"


@dataclass
class Endpoint:
    """The running session manager, and how often a waiting request checks for its client."""

    manager: StreamableHTTPSessionManager
    poll_seconds: float


ENDPOINT = web.AppKey("mcp_endpoint", Endpoint)


def _user(request: web.Request) -> AuthenticatedUser:
    """The caller as the SDK's authenticated user: sessions are bound to the user (not to one token)."""
    caller = request[CALLER]
    token = AccessToken(
        token=caller.token_id or caller.via,  # an identifier of the credential, never its text
        client_id=caller.user_id,
        scopes=sorted(caller.scopes or ()),
        subject=caller.user_id,
        claims={"iss": ISSUER},
    )
    return AuthenticatedUser(token)


async def handle(request: web.Request) -> web.StreamResponse:
    endpoint = request.app[ENDPOINT]
    bridge = AsgiBridge(request, poll_seconds=endpoint.poll_seconds)
    extra = {"user": _user(request), USER_ID: request[CALLER].user_id}
    return await bridge.run(endpoint.manager.handle_request, extra)


async def _run_manager(manager: StreamableHTTPSessionManager, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with manager.run():
        ready.set()
        await stop.wait()


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    manager = StreamableHTTPSessionManager(
        app=build_server(app),
        stateless=settings.mcp_stateless,
        security_settings=hosts.security(settings),
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=settings.mcp_session_idle_seconds,
        max_sessions=settings.mcp_max_sessions,
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_run_manager(manager, ready, stop), name="mcp-session-manager")
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        started.cancel()
        await task  # it ended before it started: raise its error
        raise RuntimeError("the MCP session manager stopped before it started")
    app[ENDPOINT] = Endpoint(manager, settings.mcp_disconnect_poll_seconds)
    try:
        yield
    finally:
        stop.set()
        await task


def install(app: web.Application) -> None:
    """Mount `/mcp` and its metadata documents on `app`, and run the session manager for the app's lifetime."""
    for method in ("POST", "GET", "DELETE"):
        app.router.add_route(method, metadata.MCP_PATH, handle)
    app.router.add_get(metadata.WELL_KNOWN, metadata.gateway_document, allow_head=False)
    app.router.add_get(metadata.WELL_KNOWN + metadata.MCP_PATH, metadata.mcp_document, allow_head=False)
    app.cleanup_ctx.append(_lifetime)
