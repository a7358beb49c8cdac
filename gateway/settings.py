"""Gateway settings."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from gateway.auth.scopes import SCOPES
from steward.settings import CommonSettings

# OIDC JWTs are verified with public keys only: `none` and HMAC algorithms can never be configured.
OIDC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class GatewaySettings(CommonSettings):
    """Where the gateway listens and how it authenticates callers."""

    # Interface the gateway's HTTP server listens on.
    gateway_host: str = "127.0.0.1"
    # TCP port the gateway's HTTP server listens on.
    gateway_port: int = 8080
    # The development token (what `make run` prints) authenticates as `dev_user_id`.
    dev_token: SecretStr
    dev_user_id: str = "dev-user"
    # User ids, besides `dev_user_id`, who administer the instance: set, list, rotate and delete its provider keys
    # (/api/v1/admin/keys), list agents on unknown model routes (/api/v1/admin/orphaned-agents); a scoped token also
    # needs the `admin` scope.
    admin_users: list[str] = Field(default_factory=list)
    # API tokens verified by the store are trusted for this long without asking again (0: always ask);
    # a revoke made through another replica takes effect here within this time.
    token_cache_seconds: float = 30.0
    # The most verified API tokens the gateway's cache holds.
    token_cache_size: int = 10_000
    # Per-user token bucket on each replica: sustained requests per second and burst (0 per second: no limit).
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    # The largest request body the gateway (and its /mcp endpoint) accepts, in bytes.
    max_body_bytes: int = 1024 * 1024
    # Seconds between the keep-alive comments an event stream sends (also how soon a client that left is noticed).
    sse_ping_seconds: float = 15.0
    # The `retry:` (milliseconds) an event stream tells clients to wait before reconnecting.
    sse_retry_ms: int = 2000
    # Seconds allowed to unary calls to the services.
    upstream_timeout: float = 10.0
    # Check every answer of a documented operation against the OpenAPI document (gateway/openapi_responses.py);
    # a mismatch becomes a 500. The test suite turns it on; production leaves it off.
    validate_responses: bool = False
    # The MCP endpoint at /mcp (gateway/mcp, ADR 0010). Host and Origin values it accepts (DNS-rebinding protection;
    # "name:*" allows any port); empty: loopback names on any port, gateway_host:gateway_port, mcp_public_url's host.
    mcp_allowed_hosts: list[str] = Field(default_factory=list)
    mcp_allowed_origins: list[str] = Field(default_factory=list)
    # Where clients reach the gateway behind a proxy (https://steward.example.com): the origin of the RFC 9728
    # metadata and of the 401 challenge's resource_metadata; empty: the request's own origin.
    mcp_public_url: str = Field(default="", pattern=r"^(https?://[^/?#\s]+)?$")
    # Serve the 2025-11-25 revision without sessions, so any replica answers any request.
    mcp_stateless: bool = False
    # A session with no request in flight (and no open GET stream) for this long ends; its id then answers 404.
    mcp_session_idle_seconds: float = Field(default=300.0, gt=0)
    # Open sessions on one replica: in all, and of one user (one more is refused: 429 RATE_LIMITED).
    mcp_max_sessions: int = Field(default=10_000, gt=0)
    mcp_max_sessions_per_user: int = Field(default=16, gt=0)
    # How long chat and decide_confirmation wait for the run to pause or end before answering "still running"
    # (under the 60 s request timeout common MCP clients use; the run goes on, get_run reads it later).
    mcp_wait_seconds: float = Field(default=25.0, gt=0)
    # How often a waiting /mcp request checks that its client is still connected.
    mcp_disconnect_poll_seconds: float = Field(default=0.5, gt=0)
    # OIDC bearer JWTs (gateway/auth/oidc.py), off unless oidc_issuer is set: tokens of that issuer for that audience,
    # signed with one of the algorithms by a key of the JWKS at oidc_jwks_url (https, or http on loopback).
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # Clock skew allowed when checking a JWT's `exp`, `nbf` and `iat`, in seconds.
    oidc_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    # The key set is fetched again after this long, and on an unknown key id at most once per min_refresh.
    oidc_jwks_cache_seconds: float = Field(default=300.0, ge=0)
    oidc_jwks_min_refresh_seconds: float = Field(default=10.0, ge=1)
    # Seconds allowed to fetch the JWKS.
    oidc_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    # The claim that holds a JWT's scopes: "scope" (RFC 9068) or "scp" (Azure AD, Okta); a space-separated string
    # or a list of strings. A JWT without it (an ID token, say) holds oidc_default_scopes: by default none, no rights.
    oidc_scope_claim: Literal["scope", "scp"] = "scope"
    oidc_default_scopes: list[str] = Field(default_factory=list)
    # The JWT header `typ` values accepted (["at+jwt"] for RFC 9068 access tokens; "application/" and case do not
    # matter); empty: not checked.
    oidc_token_types: list[str] = Field(default_factory=list)
    # The longest lifetime (`exp` - `iat`, seconds) a JWT may claim, which then must carry `iat`; 0: no limit.
    oidc_max_token_lifetime_seconds: float = Field(default=0.0, ge=0)
    # Web sessions (the web app's sign-in cookie, ADR 0024): one ends after this long unused, and after
    # web_session_max_seconds whatever its use (never after the API token it is bound to).
    web_session_idle_seconds: float = Field(default=12 * 3600.0, ge=60, le=366 * 86400)
    web_session_max_seconds: float = Field(default=7 * 86400.0, ge=60, le=366 * 86400)
    # Origins (https://app.example.com) besides the gateway's own whose state-changing requests a session cookie
    # may authenticate (CSRF protection); the own origin is the request's scheme://host (see trust_forwarded).
    web_allowed_origins: list[str] = Field(default_factory=list)
    # Behind a TLS-terminating proxy: take the request's scheme and host from X-Forwarded-Proto and
    # X-Forwarded-Host (the session cookie is then Secure, and the own origin is the proxy's). Only turn it on when
    # a proxy you run sets (or strips) both headers.
    trust_forwarded: bool = False
    # A folder of agent files (docs/agents.md) the gateway applies at start, as agents_user_id (the dev user when
    # empty); empty: none. Applying the same files again changes nothing; an invalid folder applies nothing.
    agents_dir: str = ""
    agents_user_id: str = ""

    @model_validator(mode="after")
    def _web_sessions(self) -> GatewaySettings:
        if self.web_session_idle_seconds > self.web_session_max_seconds:
            raise ValueError("web_session_idle_seconds must not exceed web_session_max_seconds")
        for origin in self.web_allowed_origins:
            url = urlsplit(origin)
            if url.scheme not in ("http", "https") or not url.netloc or url.path or url.query or url.fragment:
                raise ValueError(f"web_allowed_origins: {origin!r} is not an origin (scheme://host[:port])")
        return self

    @model_validator(mode="after")
    def _oidc_is_whole(self) -> GatewaySettings:
        if not self.oidc_issuer:
            if self.oidc_audience or self.oidc_jwks_url:
                raise ValueError("oidc_audience and oidc_jwks_url need oidc_issuer")
            return self
        if not self.oidc_audience or not self.oidc_jwks_url:
            raise ValueError("OIDC needs oidc_issuer, oidc_audience and oidc_jwks_url")
        if not self.oidc_algorithms or not set(self.oidc_algorithms) <= OIDC_ALGORITHMS:
            raise ValueError(f"oidc_algorithms must be some of {sorted(OIDC_ALGORITHMS)}")
        url = urlsplit(self.oidc_jwks_url)
        if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and url.hostname in LOOPBACK_HOSTS)):
            raise ValueError("oidc_jwks_url must be an https URL (http only on loopback)")
        unknown = sorted(set(self.oidc_default_scopes) - SCOPES.keys())
        if unknown:
            raise ValueError(f"oidc_default_scopes {unknown} are not scopes; the scopes are: {', '.join(SCOPES)}")
        if not all(re.fullmatch(r"[!-~]+", kind) for kind in self.oidc_token_types):
            raise ValueError("oidc_token_types must be media types (at+jwt, JWT, ...)")
        return self
