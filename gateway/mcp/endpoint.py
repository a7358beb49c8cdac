"""`/mcp` in the aiohttp gateway: the MCP SDK's streamable HTTP session manager behind the gateway's middlewares.

- **Authentication** is the gateway's (`gateway.auth`): the same bearer tokens as every route, a 401 with
  the RFC 9728 `resource_metadata` challenge (`metadata.challenge`). The handler binds the caller to the
  request's ASGI scope: its user id for the tools (`server.USER_ID`), and as the SDK's `user`, so a
  2025-11-25 session answers only its own user (another user's session id is answered 404).
- **Both protocol revisions**: a request whose `MCP-Protocol-Version` is 2026-07-28 is served on its own
  (stateless, no `initialize`); anything else takes the 2025-11-25 path (an `initialize` handshake, then an
  `Mcp-Session-Id` session). `mcp_stateless` serves that path without sessions too (any replica answers
  any request; the server can then send the client no requests of its own, which no tool here needs).
- **Sessions per user**: a user holds at most `mcp_max_sessions_per_user` sessions on a replica (`sessions`):
  a request that would open one more is refused with 429 `RATE_LIMITED` before the SDK sees it.
- **Host and Origin** are checked by the SDK's DNS-rebinding protection, configured from the gateway
  settings (`hosts`): 421 for a Host, 403 for an Origin it does not allow.
- **Lifetime**: the session manager runs in one task from the app's startup to its cleanup: anyio cancel
  scopes must be left in the task that entered them, and aiohttp may run startup and cleanup in different
  tasks. Should that task end early (a crash), it is logged at once and `/mcp` answers 503 `SHUTTING_DOWN`
  from then on, instead of failing every request with a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import ClientDisconnect

from gateway import problems
from gateway.app_keys import ACCESS, READINESS, SETTINGS
from gateway.auth.bearer import CALLER
from gateway.mcp import hosts, metadata
from gateway.mcp.bridge import AsgiBridge
from gateway.mcp.server import SCOPES, USER_ID, build_server
from gateway.mcp.sessions import CountingSessionManager, SessionCounts, SessionLimitError, counted
from gateway.middlewares import REQUEST_ID

log = structlog.get_logger(__name__)

ISSUER = "steward"


@dataclass
class Endpoint:
    """The running session manager (and its task), the sessions per user, and how often a waiting request checks
    for its client."""

    manager: StreamableHTTPSessionManager
    task: asyncio.Task[None]
    counts: SessionCounts
    stateless: bool
    poll_seconds: float
    idle_seconds: float


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


def _may_open_session(request: web.Request, endpoint: Endpoint) -> bool:
    """Whether the SDK takes this request as one that may open a session (as its manager routes it: no
    `Mcp-Session-Id`, a handshake revision or none, sessions on)."""
    if endpoint.stateless or MCP_SESSION_ID_HEADER in request.headers:
        return False
    version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


def _too_many_sessions(request: web.Request, endpoint: Endpoint, exc: SessionLimitError) -> web.Response:
    detail = (
        f"you have {exc.held} open MCP sessions, the most one user may hold here; end one (DELETE /mcp with its "
        f"Mcp-Session-Id) or let an idle one expire (after {endpoint.idle_seconds:g} s without requests)"
    )
    extra: dict[str, object] = {
        "request_id": request.get(REQUEST_ID, ""),
        "metadata": {"limit": "mcp_sessions_per_user", "max_sessions": str(exc.cap)},
    }
    return problems.problem(429, "RATE_LIMITED", detail, instance=request.path, extra=extra)


async def handle(request: web.Request) -> web.StreamResponse:
    endpoint = request.app[ENDPOINT]
    if endpoint.task.done():
        raise problems.HttpError(503, "SHUTTING_DOWN", "the MCP endpoint is not running; the rest of the API is")
    user_id = request[CALLER].user_id
    extra = {"user": _user(request), USER_ID: user_id, SCOPES: request[CALLER].scopes}
    bridge = AsgiBridge(request, poll_seconds=endpoint.poll_seconds)
    opening = _may_open_session(request, endpoint)
    app = counted(endpoint.manager.handle_request, endpoint.counts, user_id, opening=opening)
    if opening:  # the place is taken here and given back by `app` (settled however the request ends)
        try:
            endpoint.counts.reserve(user_id)
        except SessionLimitError as exc:
            return _too_many_sessions(request, endpoint, exc)
    return await bridge.run(app, extra)


async def _run_manager(manager: StreamableHTTPSessionManager, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with manager.run():
        ready.set()
        await stop.wait()


def _report_end(stop: asyncio.Event) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback for the manager's task: an end before cleanup asked for it is an error, said at once."""

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            if not stop.is_set():
                log.error("mcp_session_manager_stopped", cause="cancelled")
            return
        error = task.exception()
        if error is not None:
            log.error("mcp_session_manager_crashed", exc_info=error)
        elif not stop.is_set():
            log.error("mcp_session_manager_stopped", cause="returned")

    return ended


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    counts = SessionCounts(settings.mcp_max_sessions_per_user)
    manager = CountingSessionManager(
        app=build_server(app),
        stateless=settings.mcp_stateless,
        security_settings=hosts.security(settings),
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=settings.mcp_session_idle_seconds,
        max_sessions=settings.mcp_max_sessions,
        counts=counts,
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_run_manager(manager, ready, stop), name="mcp-session-manager")
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        started.cancel()
        await task  # it ended before it started: raise its error
        raise RuntimeError("the MCP session manager stopped before it started")
    task.add_done_callback(_report_end(stop))
    app[ENDPOINT] = Endpoint(
        manager,
        task,
        counts,
        settings.mcp_stateless,
        settings.mcp_disconnect_poll_seconds,
        settings.mcp_session_idle_seconds,
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait({task})  # an early end was reported by its callback already


def _readiness(app: web.Application) -> Callable[[], str]:
    """The session manager's state for /readyz: it runs in a task of its own, which may end early."""

    def state() -> str:
        endpoint = app.get(ENDPOINT)
        return "stopped" if endpoint is None or endpoint.task.done() else "serving"

    return state


class _ClientLeftMidBody(logging.Filter):
    """Drops the SDK's error log of a client that left in the middle of its request body ("Error handling POST
    request" with starlette's `ClientDisconnect` and a traceback): nothing failed, and nobody is left to answer
    (the bridge ends such a request quietly, a 499 in the access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ClientDisconnect))


_CLIENT_LEFT_MID_BODY = _ClientLeftMidBody()


def install(app: web.Application) -> None:
    """Mount `/mcp` and its metadata documents (served without a token) on `app`, and run the session manager for
    the app's lifetime."""
    logging.getLogger("mcp.server.streamable_http").addFilter(_CLIENT_LEFT_MID_BODY)  # once, however many apps
    for method in ("POST", "GET", "DELETE"):
        app.router.add_route(method, metadata.MCP_PATH, handle)
    app.router.add_get(metadata.WELL_KNOWN, metadata.gateway_document, allow_head=False)
    app.router.add_get(metadata.WELL_KNOWN + metadata.MCP_PATH, metadata.mcp_document, allow_head=False)
    app.cleanup_ctx.append(_lifetime)
    app[ACCESS].public_paths.update(metadata.METADATA_PATHS)
    app[ACCESS].challenges[metadata.MCP_PATH] = metadata.challenge
    app[READINESS]["mcp"] = _readiness(app)
