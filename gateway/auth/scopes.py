"""Scopes: what a scoped API token or OIDC JWT may do, and the one scope each route requires.

A caller with no scopes (the dev token, an API token created without scopes) has all of its user's rights; a JWT
without a scope claim holds the configured `oidc_default_scopes`, none unless set (`gateway.auth.oidc`). A caller
with scopes may call only the routes whose scope it holds; any other route answers 403 PERMISSION_DENIED with
`WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`. Scopes Steward does not know grant nothing.
Scopes restrict, never widen: a scope never reaches another user's data, which the services scope by the
principal whatever the token holds.

`ROUTE_SCOPES` is the one table, keyed by the aiohttp route (method and canonical path; HEAD is GET's). Public
routes (`PUBLIC`) need no token at all. `tests/gateway/test_scopes.py` fails when a route of the app has no
entry, or an entry names a route that is gone; at run time, a route missing here is refused to every scoped
caller.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiohttp import web

from gateway import problems

log = structlog.get_logger(__name__)

# The scopes, each with what it allows. Kept small: a read and a write per resource, and one for MCP.
SCOPES: dict[str, str] = {
    "agents:read": "list and read agents and the tools they may call (also the OpenAI API's model list)",
    "agents:write": "create, change and delete agents",
    "conversations:read": "list and read conversations and their messages",
    "conversations:write": "create and delete conversations",
    "runs:read": "list and read runs and stream their events",
    "runs:write": "start runs (also by posting a message, or by an OpenAI chat completion), cancel them, "
    "answer their client tool calls",
    "confirmations:read": "list and read confirmations",
    "confirmations:decide": "decide confirmations",
    "tokens:read": "list the user's API tokens",
    "tokens:write": "create and revoke the user's API tokens",
    "keys:read": "list the user's provider keys (never their text)",
    "keys:write": "add and delete the user's provider keys",
    "admin": "administer the instance (its provider keys, every user's agents on unknown routes); only for "
    "administrators (dev user, admin_users)",
    "usage:read": "read usage records and summaries, and budgets",
    "budgets:write": "set the user's and their agents' budgets",
    "mcp": "reach the MCP endpoint; each of its tools also needs the scope of its HTTP route (ToolDef.scope)",
}

PUBLIC = None  # a route anyone may call, without a token

ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/.well-known/oauth-protected-resource"): PUBLIC,
    ("GET", "/.well-known/oauth-protected-resource/mcp"): PUBLIC,
    ("GET", "/"): PUBLIC,  # the web app's shell (gateway.routes.web): files, no data
    ("GET", "/{app_path}"): PUBLIC,  # the shell at an app path (a deep link)
    ("GET", "/assets/{version}/{path}"): PUBLIC,  # the web app's content-hashed files
    ("GET", "/mcp"): "mcp",
    ("POST", "/mcp"): "mcp",
    ("DELETE", "/mcp"): "mcp",
    ("POST", "/api/v1/conversations"): "conversations:write",
    ("GET", "/api/v1/conversations"): "conversations:read",
    ("GET", "/api/v1/conversations/{conversation_id}"): "conversations:read",
    ("DELETE", "/api/v1/conversations/{conversation_id}"): "conversations:write",
    ("GET", "/api/v1/conversations/{conversation_id}/messages"): "conversations:read",
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): "runs:write",  # the message starts a run
    ("POST", "/api/v1/runs"): "runs:write",
    ("GET", "/api/v1/runs"): "runs:read",
    ("GET", "/api/v1/runs/{run_id}"): "runs:read",
    ("POST", "/api/v1/runs/{run_id}/cancel"): "runs:write",
    ("POST", "/api/v1/runs/{run_id}/tool_results"): "runs:write",
    ("GET", "/api/v1/runs/{run_id}/events"): "runs:read",
    ("POST", "/api/v1/agents"): "agents:write",
    ("GET", "/api/v1/agents"): "agents:read",
    ("GET", "/api/v1/agents/{agent_id}"): "agents:read",
    ("PATCH", "/api/v1/agents/{agent_id}"): "agents:write",
    ("DELETE", "/api/v1/agents/{agent_id}"): "agents:write",
    ("POST", "/api/v1/agents/apply"): "agents:write",
    ("GET", "/api/v1/agents/{agent_id}/tools"): "agents:read",
    ("GET", "/api/v1/tools"): "agents:read",
    ("GET", "/api/v1/confirmations"): "confirmations:read",
    ("GET", "/api/v1/confirmations/{confirmation_id}"): "confirmations:read",
    ("POST", "/api/v1/confirmations/{confirmation_id}/decision"): "confirmations:decide",
    ("GET", "/api/v1/confirmations/{confirmation_id}/audit"): "confirmations:read",
    ("GET", "/api/v1/runs/{run_id}/audit"): "confirmations:read",
    ("POST", "/api/v1/session"): PUBLIC,  # sign-in: the body carries the token (gateway/routes/session.py)
    ("GET", "/api/v1/session"): PUBLIC,  # the cookie's session, read by the handler
    ("DELETE", "/api/v1/session"): PUBLIC,  # sign-out
    ("POST", "/api/v1/tokens"): "tokens:write",
    ("GET", "/api/v1/tokens"): "tokens:read",
    ("DELETE", "/api/v1/tokens/{token_id}"): "tokens:write",
    ("POST", "/api/v1/keys"): "keys:write",
    ("GET", "/api/v1/keys"): "keys:read",
    ("DELETE", "/api/v1/keys/{key_id}"): "keys:write",
    ("POST", "/api/v1/admin/keys"): "admin",
    ("GET", "/api/v1/admin/keys"): "admin",
    ("DELETE", "/api/v1/admin/keys/{key_id}"): "admin",
    ("GET", "/api/v1/admin/orphaned-agents"): "admin",
    ("GET", "/api/v1/model-routes"): "agents:read",
    ("GET", "/api/v1/usage/records"): "usage:read",
    ("GET", "/api/v1/usage/summary"): "usage:read",
    ("GET", "/api/v1/budget"): "usage:read",
    ("PUT", "/api/v1/budget"): "budgets:write",
    ("GET", "/api/v1/agents/{agent_id}/budget"): "usage:read",
    ("PUT", "/api/v1/agents/{agent_id}/budget"): "budgets:write",
    ("GET", "/api/v1/runs/{run_id}/budget"): "usage:read",
    ("GET", "/v1/models"): "agents:read",
    ("GET", "/v1/models/{model}"): "agents:read",
    ("POST", "/v1/chat/completions"): "runs:write",  # a run in a new conversation, read back from its events
}


def route_key(route: web.AbstractRoute) -> tuple[str, str] | None:
    """A route's key in `ROUTE_SCOPES`, or None for aiohttp's own (an unknown path, a method not allowed)."""
    if route.resource is None:
        return None
    return ("GET" if route.method == "HEAD" else route.method, route.resource.canonical)


def challenge(scope: str) -> dict[str, str]:
    """The RFC 6750 challenge of a 403 for want of `scope` (space-separated scopes)."""
    return {"WWW-Authenticate": f'Bearer realm="steward", error="insufficient_scope", scope="{scope}"'}


def insufficient(scope: str, detail: str) -> problems.HttpError:
    return problems.HttpError(403, "PERMISSION_DENIED", detail, headers=challenge(scope))


def check(request: web.Request, granted: frozenset[str] | None) -> None:
    """Refuse (403) a caller with scopes `granted` a route whose scope it lacks; `None` holds every right."""
    if granted is None:
        return
    key = route_key(request.match_info.route)
    if key is None:
        return  # aiohttp answers it (404, 405) without calling a handler
    if key not in ROUTE_SCOPES:
        log.error("route_without_scope", method=key[0], route=key[1])
        raise problems.HttpError(403, "PERMISSION_DENIED", "this route is not open to scoped tokens")
    scope = ROUTE_SCOPES[key]
    if scope is not PUBLIC and scope not in granted:
        raise insufficient(scope, f"the token's scopes do not include {scope}")


def from_claim(value: object, default: frozenset[str]) -> frozenset[str]:
    """A JWT's scope claim (`scope`, RFC 9068: space-separated; or `scp`, often a list): `default` when absent;
    otherwise exactly the scopes it names, so one that names none of Steward's (only `openid`, say) grants nothing.
    ValueError for a claim that is neither a string nor a list of strings."""
    if value is None:
        return default
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise ValueError("the scope claim must be a space-separated string or a list of strings")


def requested(value: list[str] | None) -> list[str]:
    """The `scopes` of a token to create, each once, sorted; empty for none given. The OpenAPI document lists the
    scopes a body may name (its enum is `SCOPES`, tests/gateway/test_scopes.py)."""
    return sorted(set(value or []))


def narrowed(asked: Iterable[str], held: frozenset[str] | None) -> list[str]:
    """The scopes of a token made by a caller holding `held`: what it asked for, which must be among `held`
    (403 otherwise); asking for none gives the caller's own. A caller with every right may ask for any."""
    asked = sorted(asked)
    if held is None:
        return asked
    if not asked:
        inherited = sorted(held & SCOPES.keys())
        if not inherited:  # cannot happen for a caller that may create tokens (it holds tokens:write); fail closed
            raise insufficient("tokens:write", "the token's scopes grant nothing a new token could hold")
        return inherited
    beyond = [scope for scope in asked if scope not in held]
    if beyond:
        raise insufficient(" ".join(beyond), f"a token cannot grant scopes it does not hold: {beyond}")
    return asked
