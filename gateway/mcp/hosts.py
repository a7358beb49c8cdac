"""Which Host and Origin headers `/mcp` accepts (the SDK's DNS-rebinding protection), and the gateway's public
origin, from the gateway settings.

A DNS-rebinding attack points a name the attacker owns at the gateway's address: the victim's browser then
sends that name as `Host` (and the attacker's page as `Origin`). So the check is on names, and loopback
names may take any port: by default `/mcp` accepts `127.0.0.1`, `localhost` and `[::1]` on any port, the
host and port the gateway is configured with (`gateway_host`, `gateway_port`) when that is another name,
and the host of `mcp_public_url`; browser origins the same, over http (and https for the public URL).
`mcp_allowed_hosts` / `mcp_allowed_origins` replace these defaults. A pattern `name:*` allows any port.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from mcp.server.transport_security import TransportSecuritySettings

from gateway.app_keys import SETTINGS
from gateway.settings import GatewaySettings

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names a listening address, binds nothing


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _configured_host(settings: GatewaySettings) -> str:
    """The gateway's own address as a Host value; a loopback name when it listens on every address."""
    host = "127.0.0.1" if settings.gateway_host in _ANY_ADDRESS else settings.gateway_host
    return f"{_bracketed(host)}:{settings.gateway_port}"


def allowed_hosts(settings: GatewaySettings) -> list[str]:
    if settings.mcp_allowed_hosts:
        return list(settings.mcp_allowed_hosts)
    hosts = [f"{name}:*" for name in LOOPBACK]
    configured = _configured_host(settings)
    if configured.rpartition(":")[0] not in LOOPBACK:
        hosts.append(configured)
    if settings.mcp_public_url:
        hosts.append(urlsplit(settings.mcp_public_url).netloc)
    return hosts


def allowed_origins(settings: GatewaySettings) -> list[str]:
    if settings.mcp_allowed_origins:
        return list(settings.mcp_allowed_origins)
    origins = [f"http://{name}:*" for name in LOOPBACK]
    configured = _configured_host(settings)
    if configured.rpartition(":")[0] not in LOOPBACK:
        origins.append(f"http://{configured}")
    if settings.mcp_public_url:
        public = urlsplit(settings.mcp_public_url)
        origins.append(f"{public.scheme}://{public.netloc}")
    return origins


def security(settings: GatewaySettings) -> TransportSecuritySettings:
    """The SDK's transport security for `/mcp`: DNS-rebinding protection on, with the hosts above."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts(settings),
        allowed_origins=allowed_origins(settings),
    )


def matches(value: str, patterns: list[str]) -> bool:
    """Whether `value` is one of `patterns` (exact, or `name:*` for that name on any port), as the SDK checks."""
    return any(value == p or (p.endswith(":*") and value.startswith(p[:-1])) for p in patterns)


def public_origin(request: web.Request) -> str:
    """The origin clients reach this gateway at: `mcp_public_url`'s when set, else the request's own when its
    Host is one `/mcp` accepts, else the configured address. A Host that is not accepted is never echoed."""
    settings = request.app[SETTINGS]
    if settings.mcp_public_url:
        public = urlsplit(settings.mcp_public_url)
        return f"{public.scheme}://{public.netloc}"
    if request.host and matches(request.host, allowed_hosts(settings)):
        return f"{request.scheme}://{request.host}"
    return f"http://{_configured_host(settings)}"
