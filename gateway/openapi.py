"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json without authentication.

The document is written by hand in `gateway/openapi.yaml` (package data) and read once per process; the
JSON served is made from it once. `tests/gateway/test_openapi.py` checks that it is valid OpenAPI 3.1 and
that its operations are exactly the gateway's routes, apart from `UNDOCUMENTED` (not JSON API routes).
Request validation against it lives in `gateway.openapi_validation`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from gateway.auth.bearer import Handler

DOCUMENT_PATH = "/api/v1/openapi.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Routes that are not part of the JSON API and so not in the document: the MCP endpoint (its own protocol,
# described by its own discovery) and its OAuth protected-resource metadata (RFC 9728); the web app's files
# (gateway.routes.web: the shell at / and at app paths, its assets, its root files), HTML and scripts, no JSON API.
UNDOCUMENTED = ("/mcp", "/.well-known/oauth-protected-resource", "/assets")
UNDOCUMENTED_EXACT = ("/", "/{app_path}", "/sw.js", "/manifest.webmanifest")

routes = web.RouteTableDef()


@functools.cache
def document() -> dict[str, Any]:
    """The document, parsed from the YAML source (once per process)."""
    text = resources.files("gateway").joinpath("openapi.yaml").read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise RuntimeError("gateway/openapi.yaml is not a mapping")
    return loaded


@functools.cache
def _document_bytes() -> bytes:
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode()


def operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every documented operation."""
    return {
        (method.upper(), path) for path, item in document()["paths"].items() for method in item if method in METHODS
    }


def undocumented(path: str) -> bool:
    """Whether a route's path is, by design, not in the document."""
    return path in UNDOCUMENTED_EXACT or any(path == prefix or path.startswith(prefix + "/") for prefix in UNDOCUMENTED)


@routes.get(DOCUMENT_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_document_bytes(), content_type="application/json")


@web.middleware
async def public_document_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve the document before authentication, as /healthz is: it describes the API and holds no data.
    Placed just before the authentication middleware, so request ids, logs, metrics and errors still apply."""
    if request.path == DOCUMENT_PATH and request.method in ("GET", "HEAD"):
        return await openapi_document(request)
    return await handler(request)
