"""RFC 9728 protected-resource metadata for `/mcp`, and the 401 challenge that points MCP clients to it.

Two public documents (no token needed):

- `/.well-known/oauth-protected-resource/mcp` describes the resource `<origin>/mcp`, the MCP endpoint;
- `/.well-known/oauth-protected-resource` describes `<origin>`, the gateway's whole API, which takes the
  same bearer tokens.

Each says tokens go in the `Authorization` header only (`bearer_methods_supported: ["header"]`). When OIDC
is configured its issuer is named as the authorization server; without it there is none to name (tokens are
Steward's own API tokens or the dev token), and the member is left out, as RFC 9728 allows.

A 401 (or 403) on `/mcp` keeps the gateway's challenge (`Bearer realm="steward"`, with `error=...` where the
token was refused) and adds `resource_metadata="<origin>/.well-known/oauth-protected-resource/mcp"`.
The origin is `hosts.public_origin`: never a Host that `/mcp` would refuse.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.app_keys import SETTINGS
from gateway.mcp.hosts import public_origin
from gateway.problems import HttpError

MCP_PATH = "/mcp"
WELL_KNOWN = "/.well-known/oauth-protected-resource"
METADATA_PATHS = frozenset({WELL_KNOWN, WELL_KNOWN + MCP_PATH})
MCP_SCOPE = "mcp"  # the scope a scoped token needs for /mcp (gateway.auth.scopes)


def metadata_url(request: web.Request) -> str:
    """The absolute URL of `/mcp`'s metadata document."""
    return public_origin(request) + WELL_KNOWN + MCP_PATH


def document(request: web.Request, resource_path: str) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    body: dict[str, Any] = {
        "resource": public_origin(request) + resource_path,
        "bearer_methods_supported": ["header"],
        "resource_name": "Steward MCP endpoint" if resource_path else "Steward",
    }
    if settings.oidc_issuer:
        body["authorization_servers"] = [settings.oidc_issuer]
    if resource_path == MCP_PATH:
        body["scopes_supported"] = [MCP_SCOPE]
    return body


def _json(body: dict[str, Any]) -> web.Response:
    # Public and the same for everyone: any web page may read it.
    return web.json_response(body, headers={"Access-Control-Allow-Origin": "*"})


async def gateway_document(request: web.Request) -> web.Response:
    return _json(document(request, ""))


async def mcp_document(request: web.Request) -> web.Response:
    return _json(document(request, MCP_PATH))


def challenge(request: web.Request, error: HttpError) -> HttpError:
    """`error` with `resource_metadata` added to its challenge when it answers `/mcp`; otherwise `error`."""
    if request.path != MCP_PATH or not error.headers or "WWW-Authenticate" not in error.headers:
        return error
    value = f'{error.headers["WWW-Authenticate"]}, resource_metadata="{metadata_url(request)}"'
    return HttpError(error.status, error.reason, error.detail, headers={**error.headers, "WWW-Authenticate": value})
