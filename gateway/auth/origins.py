"""The gateway's own origin, and the CSRF check of requests a web session cookie authenticates (ADR 0024).

A browser sends its page's origin in `Origin` with every cross-origin request and with every same-origin request
that is not a GET or HEAD. A state-changing request (POST, PUT, PATCH, DELETE) authenticated by the session cookie
must carry an `Origin` that is the gateway's own (`scheme://host[:port]` of the request, from `X-Forwarded-Proto`
and `X-Forwarded-Host` when `trust_forwarded` is on) or one of `web_allowed_origins`; anything else, a missing
`Origin` included, is 403 ORIGIN_MISMATCH. Requests with a bearer token are not checked: a browser never adds one
on its own. Default ports are dropped and case is ignored when comparing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from gateway import problems
from gateway.app_keys import SETTINGS

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None when `origin` is not one."""
    try:
        url = urlsplit(origin.strip())
        port = url.port
    except ValueError:
        return None
    if url.scheme not in _DEFAULT_PORTS or not url.hostname or url.path or url.query or url.fragment:
        return None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    if port is not None and port != _DEFAULT_PORTS[url.scheme]:
        host = f"{host}:{port}"
    return f"{url.scheme}://{host}".lower()


def scheme(request: web.Request) -> str:
    """The scheme the client used: the forwarded one behind a trusted proxy, else the connection's."""
    if request.app[SETTINGS].trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if forwarded in _DEFAULT_PORTS:
            return forwarded
    return request.scheme


def secure(request: web.Request) -> bool:
    """Whether the client reached the gateway over TLS (the session cookie is then `Secure`)."""
    return scheme(request) == "https"


def own(request: web.Request) -> str | None:
    """The origin the client reached the gateway at."""
    host = request.host
    if request.app[SETTINGS].trust_forwarded:
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip() or host
    return normalized(f"{scheme(request)}://{host}")


def allowed(request: web.Request, origin: str) -> bool:
    """Whether `origin` (an `Origin` header) is the gateway's own or a configured one."""
    given = normalized(origin)
    if given is None:
        return False
    configured = {normalized(value) for value in request.app[SETTINGS].web_allowed_origins}
    return given == own(request) or given in configured


def check(request: web.Request) -> None:
    """Refuse (403 ORIGIN_MISMATCH) a state-changing request whose `Origin` is missing or foreign."""
    if request.method not in STATE_CHANGING:
        return
    origin = request.headers.get("Origin", "")
    if not origin:
        raise problems.HttpError(
            403, "ORIGIN_MISMATCH", "a request signed in by the session cookie must carry an Origin header"
        )
    if not allowed(request, origin):
        raise problems.HttpError(403, "ORIGIN_MISMATCH", "the request's Origin is not this gateway's")
