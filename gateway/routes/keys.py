"""The caller's provider keys, write-only: /api/v1/keys[/{id}], over the provider service.

A key's secret goes in once, with the put, straight to the provider service (the only holder of keys);
no answer, log line or error of the gateway ever carries it: listings show the id, provider, label and the
last 4 characters (none for secrets shorter than 12). Each user holds at most one key per provider, so a
put for a provider that has a key replaces it and keeps its id. A user manages only their own keys here.

The instance's keys (used by every user who has none of their own) are managed under /api/v1/admin/keys by
administrators only: the dev user and the users in `admin_users` (a scoped token also needs the `admin` scope).
The gateway makes those calls as a service (`service:gateway`), which is what the provider requires for them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import presenters
from gateway.app_keys import CLIENTS, SETTINGS
from gateway.auth.bearer import CALLER, acting_as
from gateway.bodies import json_object, page
from gateway.problems import HttpError
from steward.auth import service_principal
from steward.errors import Reason
from steward.provider.v1 import key_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb

routes = web.RouteTableDef()

NO_STORE = {"Cache-Control": "no-store"}
_SCOPES = {key_pb2.KEY_SCOPE_USER: "user", key_pb2.KEY_SCOPE_INSTANCE: "instance"}


def key_json(key: key_pb2.ProviderKey) -> dict[str, Any]:
    """A key's metadata; a ProviderKey has no secret to leak."""
    return {
        "id": key.id,
        "provider": key.provider,
        "label": key.label,
        "last4": key.last4 or None,
        "scope": _SCOPES.get(key.scope),
        "create_time": presenters.time_json(key.create_time, key.HasField("create_time")),
        "update_time": presenters.time_json(key.update_time, key.HasField("update_time")),
    }


async def _put(request: web.Request, scope: key_pb2.KeyScope.ValueType) -> web.Response:
    body = await json_object(request)  # the document bounds the secret's characters; the service its bytes
    message = provider_pb.PutKeyRequest(
        scope=scope, provider=body["provider"], label=body.get("label") or "", secret=body["secret"]
    )
    reply = await request.app[CLIENTS].provider.PutKey(message)
    return web.json_response(key_json(reply.key), headers=NO_STORE)


async def _list(request: web.Request) -> web.Response:
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].provider.ListKeys(
        provider_pb.ListKeysRequest(page_size=page_size, page_token=page_token)
    )
    return web.json_response(
        {"keys": [key_json(key) for key in reply.keys], "next_page_token": reply.next_page_token or None}
    )


@routes.post("/api/v1/keys")
async def put_key(request: web.Request) -> web.Response:
    """Store the caller's key for a provider (`{"provider", "secret", "label"?}`), replacing the one they had for
    that provider; 200 with the key's metadata."""
    return await _put(request, key_pb2.KEY_SCOPE_USER)


@routes.get("/api/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    return await _list(request)


@routes.delete("/api/v1/keys/{key_id}")
async def delete_key(request: web.Request) -> web.Response:
    """Delete one of the caller's keys; another user's key, or one already deleted, is 404 KEY_NOT_FOUND."""
    await request.app[CLIENTS].provider.DeleteKey(provider_pb.DeleteKeyRequest(id=request.match_info["key_id"]))
    return web.Response(status=204)


def require_admin(request: web.Request, doing: str = "manage the instance's keys") -> None:
    """403 PERMISSION_DENIED unless the caller is an administrator: the dev user or one of `admin_users`."""
    settings = request.app[SETTINGS]
    user_id = request[CALLER].user_id
    if user_id != settings.dev_user_id and user_id not in settings.admin_users:
        raise HttpError(403, Reason.PERMISSION_DENIED, f"only administrators {doing}")


@routes.post("/api/v1/admin/keys")
async def put_instance_key(request: web.Request) -> web.Response:
    """Set or rotate the instance's key for a provider (administrators only); 200 with its metadata."""
    require_admin(request)
    with acting_as(service_principal("gateway")):
        return await _put(request, key_pb2.KEY_SCOPE_INSTANCE)


@routes.get("/api/v1/admin/keys")
async def list_instance_keys(request: web.Request) -> web.Response:
    require_admin(request)
    with acting_as(service_principal("gateway")):
        return await _list(request)


@routes.delete("/api/v1/admin/keys/{key_id}")
async def delete_instance_key(request: web.Request) -> web.Response:
    require_admin(request)
    with acting_as(service_principal("gateway")):
        await request.app[CLIENTS].provider.DeleteKey(provider_pb.DeleteKeyRequest(id=request.match_info["key_id"]))
    return web.Response(status=204)
