"""The caller's API tokens: /api/v1/tokens[/{id}].

A token's text is answered once, by the create; lists and revokes show only its metadata and the
non-secret lookup prefix. A token may be given scopes (`gateway.auth.scopes`); a token made by a caller with
scopes holds at most the caller's scopes (its own, when it asks for none), and one made with an expiring
credential (an API token, an OIDC JWT) expires no later than it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from google.protobuf.duration_pb2 import Duration

from gateway import presenters, problems
from gateway.app_keys import CLIENTS
from gateway.auth import bearer, scopes
from gateway.bodies import field_error, json_object, page
from steward.store.v1 import identity_pb2
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

MAX_TTL = timedelta(days=366)  # the store's limit
NO_STORE = {"Cache-Control": "no-store"}


def token_json(token: identity_pb2.ApiToken) -> dict[str, Any]:
    """A token's metadata; it never holds the token's text."""
    expired = token.HasField("expire_time") and token.expire_time.seconds <= time.time()
    revoked = token.HasField("revoke_time")
    return {
        "id": token.id,
        "label": token.label,
        "prefix": token.prefix,
        "scopes": list(token.scopes),
        "state": "revoked" if revoked else "expired" if expired else "active",
        "create_time": presenters.time_json(token.create_time, token.HasField("create_time")),
        "expire_time": presenters.time_json(token.expire_time, token.HasField("expire_time")),
        "revoke_time": presenters.time_json(token.revoke_time, revoked),
    }


def _ttl(body: dict[str, Any]) -> timedelta | None:
    """`ttl_seconds` (an integer, bounded by the document) or `expire_time` (RFC 3339 with an offset), or neither:
    never expires."""
    ttl, expire = body.get("ttl_seconds"), body.get("expire_time")
    if ttl is not None and expire is not None:  # stays: a rule across two fields
        raise field_error("ttl_seconds", "give ttl_seconds or expire_time, not both")
    if ttl is not None:
        return timedelta(seconds=ttl)
    if expire is None:
        return None
    # Stays: the document says only "a string" (formats are not asserted), and the bounds depend on the time now.
    try:
        when = datetime.fromisoformat(expire)
    except ValueError as exc:
        raise field_error("expire_time", "must be an RFC 3339 timestamp") from exc
    if when.tzinfo is None:
        raise field_error("expire_time", "must carry a UTC offset (for example Z)")
    left = when - datetime.now(UTC)
    if left < timedelta(seconds=1):
        raise field_error("expire_time", "must be in the future")
    if left > MAX_TTL:
        raise field_error("expire_time", f"must be at most {MAX_TTL.days} days from now")
    return left


def _capped(ttl: timedelta | None, caller: bearer.Caller) -> timedelta | None:
    """A token made with an expiring credential (an API token, an OIDC JWT) expires no later than it, so a
    short-lived one cannot mint a lasting one (revoking a token does not revoke those made with it)."""
    if caller.token_expires is None:
        return ttl
    left = caller.token_expires - time.time()
    if left < 1:
        raise problems.HttpError(401, "TOKEN_INVALID", "the token is not valid", headers=bearer.INVALID_CHALLENGE)
    cap = timedelta(seconds=min(left, MAX_TTL.total_seconds()))  # a JWT may claim an exp centuries away
    return cap if ttl is None else min(ttl, cap)


@routes.post("/api/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    """A new token for the caller: its text is in `token`, shown this once."""
    body = await json_object(request)
    label = body.get("label") or ""
    caller = request[bearer.CALLER]
    ttl = _capped(_ttl(body), caller)
    granted = scopes.narrowed(scopes.requested(body.get("scopes")), caller.scopes)
    message = store_pb.CreateApiTokenRequest(label=label, scopes=granted)
    if ttl is not None:
        message.ttl.CopyFrom(Duration(seconds=int(ttl.total_seconds())))
    async with bearer.as_token_owner(request):
        reply = await request.app[CLIENTS].identity.CreateApiToken(message)
    return web.json_response({**token_json(reply.token), "token": reply.secret}, status=201, headers=NO_STORE)


@routes.get("/api/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    page_size, page_token = page(request)
    async with bearer.as_token_owner(request):
        reply = await request.app[CLIENTS].identity.ListApiTokens(
            store_pb.ListApiTokensRequest(page_size=page_size, page_token=page_token)
        )
    return web.json_response(
        {"tokens": [token_json(t) for t in reply.tokens], "next_page_token": reply.next_page_token or None}
    )


@routes.delete("/api/v1/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke one of the caller's tokens (idempotent); another user's token is 404 TOKEN_NOT_FOUND."""
    async with bearer.as_token_owner(request):
        reply = await request.app[CLIENTS].identity.RevokeApiToken(
            store_pb.RevokeApiTokenRequest(id=request.match_info["token_id"])
        )
    bearer.token_cache(request.app).forget_token(reply.token.id)
    return web.json_response(token_json(reply.token))
