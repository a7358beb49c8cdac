"""The web app: the files of `gateway/web/` served at `/`, without a token (they hold no data; the app signs in
through the API).

- `/` and every app path that is not the API's or an operations route (`/c/<id>`: a deep link reloads into the
  app) answer the shell, `index.html`, with `Cache-Control: no-cache` and an ETag: a browser revalidates it on
  every load, so a deployment is seen at once.
- The other files are served under `/assets/<version>/<path>`, where `<version>` is a hash of the whole folder's
  content, computed when the app is created and rendered into the shell in place of `{{assets}}`. A changed file
  changes every asset URL, so they are cached for a year (`public, max-age=31536000, immutable`); relative module
  imports (`./vendor/lit.js`) resolve under the same version. A URL of another version answers 404.
- Files that must keep one URL (a service worker, `/sw.js`; a web app manifest) are served at the root, without
  caching, when the folder holds them (`ROOT_FILES`).

Every answer of the gateway, API included, carries `X-Content-Type-Options: nosniff`, `Referrer-Policy:
no-referrer` and `X-Frame-Options: DENY`; the web app's answers carry the strict `CONTENT_SECURITY_POLICY` (no
inline script or style, no eval), the others one that allows nothing (`API_CONTENT_SECURITY_POLICY`). Text files
are sent gzip-compressed to a browser that accepts it. The files are read once, when the app is created.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from gateway.app_keys import ACCESS

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "manifest-src 'self'; worker-src 'self'"
)
API_CONTENT_SECURITY_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
SHELL = "index.html"
ASSETS_PLACEHOLDER = b"{{assets}}"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
ROOT_FILES = ("sw.js", "manifest.webmanifest")
# First path segments that are never the app's: the API, the OpenAI-compatible API, MCP, operations, assets.
RESERVED = ("api", "v1", "mcp", "assets", "healthz", "readyz", "metrics", ".well-known")
# An app path: not under a reserved segment, and with no dot (a missing file, /favicon.ico, is no app path).
APP_PATH = "/{app_path:(?!(?:" + "|".join(s.replace(".", r"\.") for s in RESERVED) + r")(?:/|$))[^.]+}"
ASSET_PATH = "/assets/{version}/{path:.+}"
APP_TEMPLATE, ASSET_TEMPLATE = "/{app_path}", "/assets/{version}/{path}"  # aiohttp's canonical forms of the two
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "application/manifest+json", "image/svg+xml")
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".webmanifest": "application/manifest+json"}


@dataclass(frozen=True)
class WebFile:
    """One file of the app, as it is sent: its bytes, their gzip compression (text only) and its media type."""

    body: bytes
    gzipped: bytes | None
    content_type: str


@dataclass(frozen=True)
class WebApp:
    """The app's files, read once: the rendered shell, its ETag, the assets of `version` by path, and the path
    templates of its routes (canonical, as aiohttp names them)."""

    version: str
    shell: WebFile
    etag: str
    assets: dict[str, WebFile]
    templates: frozenset[str]


WEB_APP = web.AppKey("web_app", WebApp)


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for item in folder.iterdir():
        if item.name.startswith(".") or item.name == "__pycache__":
            continue
        if item.is_dir():
            found.update(_walk(item, f"{prefix}{item.name}/"))
        else:
            found[f"{prefix}{item.name}"] = item.read_bytes()
    return found


def _file(path: str, body: bytes) -> WebFile:
    suffix = path[path.rfind(".") :] if "." in path else ""
    media = _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    text = media.startswith(_TEXT_TYPES)
    return WebFile(body, gzip.compress(body, mtime=0) if text else None, f"{media}; charset=utf-8" if text else media)


def load(folder: Traversable | None = None) -> WebApp:
    """The files of `folder` (`gateway/web/`), the version their content hashes to, and the rendered shell."""
    files = _walk(folder if folder is not None else resources.files("gateway").joinpath("web"))
    if SHELL not in files:
        raise RuntimeError(f"the web app has no {SHELL}")
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    version = digest.hexdigest()[:16]
    shell = files.pop(SHELL).replace(ASSETS_PLACEHOLDER, f"/assets/{version}".encode())
    assets = {path: _file(path, body) for path, body in files.items()}
    roots = {f"/{name}" for name in ROOT_FILES if name in assets}
    templates = frozenset({"/", ASSET_TEMPLATE, APP_TEMPLATE, *roots})
    return WebApp(version, _file(SHELL, shell), f'"{version}"', assets, templates)


def _send(request: web.Request, file: WebFile, cache_control: str, etag: str | None = None) -> web.Response:
    headers = {"Cache-Control": cache_control, "Content-Type": file.content_type}
    if etag is not None:
        headers["ETag"] = etag
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
    if file.gzipped is None:
        return web.Response(body=file.body, headers=headers)
    headers["Vary"] = "Accept-Encoding"
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=file.gzipped, headers=headers)
    return web.Response(body=file.body, headers=headers)


async def shell(request: web.Request) -> web.Response:
    app = request.app[WEB_APP]
    return _send(request, app.shell, NO_CACHE, app.etag)


async def asset(request: web.Request) -> web.Response:
    app = request.app[WEB_APP]
    file = app.assets.get(request.match_info["path"])
    if request.match_info["version"] != app.version or file is None:
        raise web.HTTPNotFound()
    return _send(request, file, IMMUTABLE)


async def root_file(request: web.Request) -> web.Response:
    app = request.app[WEB_APP]
    name = request.path.removeprefix("/")
    return _send(request, app.assets[name], NO_CACHE, f'"{app.version}"')


def routes(app: WebApp) -> list[web.RouteDef]:
    """The web app's routes: the shell at / and at app paths, the assets, and the root files the folder holds."""
    table = [web.get("/", shell), web.get(ASSET_PATH, asset), web.get(APP_PATH, shell)]
    table += [web.get(f"/{name}", root_file) for name in ROOT_FILES if name in app.assets]
    return table


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, before it is sent (streams too): the security headers, a route's own left alone."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    resource = request.match_info.route.resource
    web_route = resource is not None and resource.canonical in request.app[WEB_APP].templates
    policy = CONTENT_SECURITY_POLICY if web_route else API_CONTENT_SECURITY_POLICY
    response.headers.setdefault("Content-Security-Policy", policy)


def install(app: web.Application, web_app: WebApp | None = None) -> None:
    """Serve the web app (last: its app paths match only what no other route does) and add the security headers."""
    web_app = web_app if web_app is not None else load()
    app[WEB_APP] = web_app
    app.router.add_routes(routes(web_app))
    app[ACCESS].public_routes.update(web_app.templates)
    app.on_response_prepare.append(_headers)
