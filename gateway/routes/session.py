"""The web app's sign-in: /api/v1/session (ADR 0024).

`POST` takes `{"token": ...}` (an API token or the dev token), starts a web session in the store bound to that
token, and sets the `steward_session` cookie (HttpOnly, SameSite=Strict, Path=/, Secure when the client came over
TLS) to the session's random secret, never to the token. `GET` answers the cookie's session; `DELETE` ends it in
the store and clears the cookie. The session's user and scopes are the token's; it ends when the token is revoked
or expires, after `web_session_idle_seconds` unused, and `web_session_max_seconds` after sign-in.

The three are served without a bearer token (they read the cookie themselves). A sign-in that carries an `Origin`
must carry the gateway's own (login CSRF); a sign-out with a cookie must carry it (`gateway.auth.origins`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from gateway import presenters, problems
from gateway.app_keys import ACCESS, CLIENTS, SETTINGS
from gateway.auth import bearer, origins
from gateway.bodies import json_object
from steward.store.v1 import identity_pb2
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

PATH = "/api/v1/session"
NO_STORE = {"Cache-Control": "no-store"}


def install(app: web.Application) -> None:
    """Add /api/v1/session to `app`, served without a bearer token."""
    app.router.add_routes(routes)
    app[ACCESS].public_paths.add(PATH)


def _duration(seconds: float) -> Duration:
    value = Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def _session_json(caller: bearer.Caller, expire_time: str | None) -> dict[str, Any]:
    """Who the session acts for: `scopes` are its token's (empty: all of the user's rights, as for tokens)."""
    return {
        "user_id": caller.user_id,
        "via": caller.via,
        "scopes": sorted(caller.scopes or []),
        "expire_time": expire_time,
    }


def _timestamp(value: float | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromMicroseconds(round(value * 1e6))  # the store keeps microseconds
    return stamp


def _cookie_attributes(request: web.Request) -> dict[str, Any]:
    return {"path": "/", "httponly": True, "samesite": "Strict", "secure": origins.secure(request) or None}


@routes.post(PATH)
async def sign_in(request: web.Request) -> web.Response:
    origin = request.headers.get("Origin", "")
    if origin and not origins.allowed(request, origin):
        raise problems.HttpError(403, "ORIGIN_MISMATCH", "the request's Origin is not this gateway's")
    body = await json_object(request)
    app = request.app
    settings = app[SETTINGS]
    caller = await bearer.session_credential(app, body["token"])
    owner = await bearer.dev_record_id(app) if caller.user_id == settings.dev_user_id else caller.user_id
    create = store_pb.CreateWebSessionRequest(
        user_id=owner,
        token_id=caller.token_id,
        credential_digest="" if caller.token_id else bearer.dev_token_digest(app),
        ttl=_duration(settings.web_session_max_seconds),
        idle_ttl=_duration(settings.web_session_idle_seconds),
    )
    previous = request.cookies.get(bearer.SESSION_COOKIE, "")
    with bearer.acting_as(bearer.GATEWAY):
        reply = await app[CLIENTS].identity.CreateWebSession(create)
        if previous and previous.isascii() and len(previous) <= bearer.MAX_TOKEN_LENGTH:
            await app[CLIENTS].identity.EndWebSession(store_pb.EndWebSessionRequest(secret=previous))
    session: identity_pb2.WebSession = reply.session
    response = web.json_response(_session_json(caller, presenters.time_json(session.expire_time)), headers=NO_STORE)
    lifetime = session.expire_time.seconds - session.create_time.seconds
    response.set_cookie(bearer.SESSION_COOKIE, reply.secret, max_age=max(lifetime, 1), **_cookie_attributes(request))
    return response


@routes.get(PATH)
async def get_session(request: web.Request) -> web.Response:
    secret = request.cookies.get(bearer.SESSION_COOKIE, "")
    if not secret:
        raise problems.HttpError(401, "TOKEN_MISSING", "not signed in (no session cookie)", headers=bearer.CHALLENGE)
    caller = await bearer.session_caller(request.app, secret)
    expires = presenters.time_json(_timestamp(caller.session_expires))
    return web.json_response(_session_json(caller, expires), headers=NO_STORE)


@routes.delete(PATH)
async def sign_out(request: web.Request) -> web.Response:
    """End the cookie's session (if any) and clear the cookie; signing out twice is fine."""
    secret = request.cookies.get(bearer.SESSION_COOKIE, "")
    if secret:
        origins.check(request)
        if secret.isascii() and len(secret) <= bearer.MAX_TOKEN_LENGTH:
            with bearer.acting_as(bearer.GATEWAY):
                await request.app[CLIENTS].identity.EndWebSession(store_pb.EndWebSessionRequest(secret=secret))
    response = web.Response(status=204, headers=NO_STORE)
    response.del_cookie(bearer.SESSION_COOKIE, **_cookie_attributes(request))
    return response
