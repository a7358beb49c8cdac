"""OIDC bearer JWTs (optional): verified against the issuer's JWKS, mapped onto Steward users and scopes.

Off unless `oidc_issuer` is set (with `oidc_audience` and `oidc_jwks_url`; see `GatewaySettings`). A bearer
token shaped like a JWT (three dot-separated parts) is then verified here:

- the header's `alg` must be one of `oidc_algorithms` (asymmetric only: `none` and HMAC are refused by the
  settings and never reach PyJWT) and its `kid` must name a key of the issuer's key set (`gateway.jwks`);
  a key that declares its own `alg` verifies only that algorithm;
- PyJWT checks the signature, `iss` (exactly `oidc_issuer`), `aud` (must contain `oidc_audience`), `exp`
  (required), `nbf` and `iat` when present, all with `oidc_leeway_seconds` of clock skew; `sub` is required.

Any failure is 401 TOKEN_INVALID (`error="invalid_token"`); a key set that cannot be fetched is 503
DEPENDENCY_UNAVAILABLE with `Retry-After`, never an acceptance.

Users. A JWT's subject is a Steward user whose id the store assigns: the gateway asks the store's `CreateUser`
(as `service:gateway`) with the request id `oidc:` + SHA-256 of `iss` NUL `sub`, so the first request of a new
subject creates its record and every later one, on any replica, finds the same record (the store keeps
request ids per creating service). Its display name is taken from `preferred_username`, `name`, `email` or
`sub` once, at creation. Each replica remembers the mapping (bounded, least recently used first out).

Scopes. The `scope` claim (space-separated) maps onto `gateway.scopes`: absent, the JWT has all its user's
rights, like an API token without scopes; present, exactly the scopes it names, so a JWT carrying only
`openid profile` may call no route. A JWT is a primary credential, like the dev token: API tokens made with
one are not capped at its expiry (they are at its scopes).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from aiohttp import web

from gateway import problems, scopes
from gateway.jwks import JwksCache, JwksUnavailableError
from gateway.keys import CLIENTS, SETTINGS
from gateway.settings import GatewaySettings
from steward.auth import reset_principal, service_principal, set_principal
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)

USER_REQUEST_PREFIX = "oidc:"
MAX_JWT_LENGTH = 8192
MAX_USERS = 10_000
MAX_DISPLAY_NAME = 200
NAME_CLAIMS = ("preferred_username", "name", "email", "sub")
GATEWAY = service_principal("gateway")


class InvalidJwtError(Exception):
    """The JWT is not valid; its message says why, for the 401's detail (never the token)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified JWT acts for: the store user of its subject, and its scopes (None: all rights)."""

    user_id: str
    scopes: frozenset[str] | None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and len(token) <= MAX_JWT_LENGTH


def _display_name(claims: dict[str, Any]) -> str:
    for claim in NAME_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str):
            name = "".join(char for char in value if char.isprintable())[:MAX_DISPLAY_NAME].strip()
            if name:
                return name
    return "oidc user"


class OidcVerifier:
    """One issuer's JWT verification and subject mapping, per gateway app."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = frozenset(settings.oidc_algorithms)
        self._leeway = settings.oidc_leeway_seconds
        self._retry_after = str(max(1, math.ceil(settings.oidc_jwks_min_refresh_seconds)))
        self.jwks = JwksCache(
            settings.oidc_jwks_url,
            max_age=settings.oidc_jwks_cache_seconds,
            min_interval=settings.oidc_jwks_min_refresh_seconds,
            timeout=settings.oidc_jwks_timeout_seconds,
        )
        self._users: OrderedDict[str, str] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid JWT; InvalidJwtError, or a 503 HttpError when the keys cannot be fetched."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidJwtError("the token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidJwtError("the token's signing algorithm is not accepted")
        if not isinstance(kid, str) or not kid:
            raise InvalidJwtError("the token names no signing key (kid)")
        try:
            jwk = await self.jwks.get(kid)
        except JwksUnavailableError:
            raise problems.HttpError(
                503,
                "DEPENDENCY_UNAVAILABLE",
                "the identity provider's signing keys cannot be fetched; try again later",
                headers={"Retry-After": self._retry_after},
            ) from None
        if jwk is None:
            raise InvalidJwtError("the token's signing key is not one of the issuer's")
        if jwk.get("alg", alg) != alg:
            raise InvalidJwtError("the token's signing algorithm does not match its key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            log.info("oidc_token_refused", error=type(exc).__name__)
            raise InvalidJwtError(f"the token is not valid: {exc}") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidJwtError("the token has no subject")
        return claims

    async def identity(self, app: web.Application, token: str) -> Identity:
        """The user and scopes a bearer JWT proves."""
        claims = await self.verify(token)
        try:
            granted = scopes.from_claim(claims.get("scope"))
        except ValueError as exc:
            raise InvalidJwtError(str(exc)) from None
        return Identity(await self._user_id(app, claims), granted)

    async def _user_id(self, app: web.Application, claims: dict[str, Any]) -> str:
        subject = f"{claims['iss']}\x00{claims['sub']}"
        known = self._users.get(subject)
        if known is not None:
            self._users.move_to_end(subject)
            return known
        request = store_pb.CreateUserRequest(
            display_name=_display_name(claims),
            request_id=USER_REQUEST_PREFIX + hashlib.sha256(subject.encode()).hexdigest(),
        )
        principal = set_principal(GATEWAY)
        try:
            reply = await app[CLIENTS].identity.CreateUser(request)
        finally:
            reset_principal(principal)
        self._users[subject] = reply.user.id
        while len(self._users) > MAX_USERS:
            self._users.popitem(last=False)
        return reply.user.id


OIDC = web.AppKey("oidc", OidcVerifier)


def install(app: web.Application) -> None:
    """Give the app an OIDC verifier when OIDC is configured; its HTTP client closes with the app."""
    settings = app[SETTINGS]
    if not settings.oidc_issuer:
        return
    verifier = OidcVerifier(settings)
    app[OIDC] = verifier

    async def close_jwks(_app: web.Application) -> AsyncIterator[None]:
        yield
        await verifier.jwks.close()

    app.cleanup_ctx.append(close_jwks)


def verifier(app: web.Application) -> OidcVerifier | None:
    """The app's OIDC verifier; None when OIDC is off."""
    return app.get(OIDC)
