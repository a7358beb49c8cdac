"""OIDC bearer JWTs (optional): verified against the issuer's JWKS, mapped onto Steward users and scopes.

Off unless `oidc_issuer` is set (with `oidc_audience` and `oidc_jwks_url`; see `GatewaySettings`). A bearer
token shaped like a JWT (three dot-separated parts) is then verified here:

- the header's `alg` must be one of `oidc_algorithms` (asymmetric only: `none` and HMAC are refused by the
  settings and never reach PyJWT), its `typ` one of `oidc_token_types` when that is set, and its `kid` must name a
  key of the issuer's key set (`gateway.auth.jwks`) of the algorithm's key type; a key that declares its own `alg`
  verifies only that algorithm;
- PyJWT checks the signature, `iss` (exactly `oidc_issuer`), `aud` (must contain `oidc_audience`), `exp`
  (required), `nbf` and `iat` when present, all with `oidc_leeway_seconds` of clock skew; `sub` is required;
  with `oidc_max_token_lifetime_seconds`, `iat` is required and `exp - iat` may not exceed it.

A bad token is 401 TOKEN_INVALID (`error="invalid_token"`), whatever PyJWT raises. The issuer's side failing is
503 DEPENDENCY_UNAVAILABLE with `Retry-After`, never an acceptance and never a 500: a key set that cannot be
fetched, or a key of it that cannot be built (malformed, or not a public key). Logs name the error's type, never
key material or PyJWT's text about a key (which may quote it).

Users. A JWT's subject is a Steward user whose id the store assigns: the gateway asks the store's `CreateUser`
(as `service:gateway`) with the request id `oidc:` + SHA-256 of `iss` NUL `sub`, so the first request of a new
subject creates its record and every later one, on any replica, finds the same record (the store keeps
request ids per creating service). Its display name is taken from `preferred_username`, `name`, `email` or
`sub` once, at creation. Each replica remembers the mapping (bounded, least recently used first out).

Scopes. The `oidc_scope_claim` claim (`scope` or `scp`; a space-separated string or a list of strings) maps onto
`gateway.auth.scopes`: present, exactly the scopes it names, so a JWT carrying only `openid profile` may call no
route; absent (ID tokens carry none), `oidc_default_scopes`, which is empty unless configured: fail closed.

Expiry. The caller's `token_expires` is the JWT's `exp`, so an API token made with a JWT expires no later than
it (`gateway.routes.tokens`).
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
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gateway import problems
from gateway.app_keys import CLIENTS, SETTINGS
from gateway.auth import scopes
from gateway.auth.jwks import JwksCache, JwksUnavailableError
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
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
PUBLIC_KEYS = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)


class InvalidJwtError(Exception):
    """The JWT is not valid; its message says why, for the 401's detail (never the token)."""


class UnusableKeyError(Exception):
    """The issuer's key cannot be used (malformed, or not a public key): the issuer's fault, not the token's.
    Its message is the failure's type, never the key."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified JWT acts for: the store user of its subject, its scopes, and when it expires (time.time())."""

    user_id: str
    scopes: frozenset[str]
    expires: float


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


def media_type(value: str) -> str:
    """A `typ` value as RFC 7515 compares it: without case, `application/` optional."""
    return value.lower().removeprefix("application/")


def key_type(alg: str) -> str:
    """The JWK `kty` of an algorithm's keys."""
    if alg == "EdDSA":
        return "OKP"
    return "EC" if alg.startswith("ES") else "RSA"


def build_key(jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
    """The key of the set a token names, for the token's `alg`: InvalidJwtError when the token chose an algorithm
    the key is not for, UnusableKeyError when the issuer's key cannot be built or is not a public key."""
    fits = jwk.get("alg", alg) == alg and jwk.get("kty") == key_type(alg)
    if not fits or (alg in EC_CURVES and jwk.get("crv") != EC_CURVES[alg]):
        raise InvalidJwtError("the token's signing algorithm does not match its key")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except Exception as exc:  # noqa: BLE001 - PyJWT's text may quote the key: keep only the failure's type
        raise UnusableKeyError(type(exc).__name__) from None
    if not isinstance(key.key, PUBLIC_KEYS):
        raise UnusableKeyError(f"not a public key ({type(key.key).__name__})")
    return key


def _timestamp(claims: dict[str, Any], name: str) -> float:
    """A time claim PyJWT has accepted (an integer, or text or a float that int() takes), as a number."""
    try:
        return float(int(claims[name]))
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InvalidJwtError(f"the token's {name} claim is not a time") from None


class OidcVerifier:
    """One issuer's JWT verification and subject mapping, per gateway app."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = frozenset(settings.oidc_algorithms)
        self._leeway = settings.oidc_leeway_seconds
        self._types = frozenset(media_type(kind) for kind in settings.oidc_token_types)
        self._max_lifetime = settings.oidc_max_token_lifetime_seconds
        self._scope_claim = settings.oidc_scope_claim
        self._default_scopes = frozenset(settings.oidc_default_scopes)
        self._retry_after = str(max(1, math.ceil(settings.oidc_jwks_min_refresh_seconds)))
        self.jwks = JwksCache(
            settings.oidc_jwks_url,
            max_age=settings.oidc_jwks_cache_seconds,
            min_interval=settings.oidc_jwks_min_refresh_seconds,
            timeout=settings.oidc_jwks_timeout_seconds,
        )
        self._users: OrderedDict[str, str] = OrderedDict()

    def _unavailable(self, detail: str) -> problems.HttpError:
        return problems.HttpError(503, "DEPENDENCY_UNAVAILABLE", detail, headers={"Retry-After": self._retry_after})

    def _header(self, token: str) -> tuple[str, str]:
        """The token's `alg` and `kid`, once its header passes the checks that need no key."""
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # noqa: BLE001 - whatever the header holds: not a well-formed JWT, never a 500
            raise InvalidJwtError("the token is not a well-formed JWT") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidJwtError("the token's signing algorithm is not accepted")
        if not isinstance(kid, str) or not kid:
            raise InvalidJwtError("the token names no signing key (kid)")
        if self._types and not (isinstance(typ, str) and media_type(typ) in self._types):
            raise InvalidJwtError("the token's type (typ) is not accepted")
        return alg, kid

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        required = ["exp", "iss", "aud", "sub", *(["iat"] if self._max_lifetime else [])]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": required, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            log.info("oidc_token_refused", error=type(exc).__name__)
            raise InvalidJwtError(f"the token is not valid: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever else the token makes PyJWT raise: refused, not a 500
            log.warning("oidc_token_unreadable", error=type(exc).__name__)
            raise InvalidJwtError("the token is not valid") from None
        return claims

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid JWT; InvalidJwtError, or a 503 HttpError when the issuer's keys cannot be used."""
        alg, kid = self._header(token)
        try:
            jwk = await self.jwks.get(kid)
        except JwksUnavailableError:
            raise self._unavailable("the identity provider's signing keys cannot be fetched; try again later") from None
        if jwk is None:
            raise InvalidJwtError("the token's signing key is not one of the issuer's")
        try:
            key = build_key(jwk, alg)
        except UnusableKeyError as exc:
            log.warning("oidc_key_unusable", kid=kid[:100], error=str(exc))
            raise self._unavailable("the identity provider's signing key cannot be used") from None
        claims = self._decode(token, key, alg)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidJwtError("the token has no subject")
        if self._max_lifetime and _timestamp(claims, "exp") - _timestamp(claims, "iat") > self._max_lifetime:
            raise InvalidJwtError(f"the token lives longer (exp - iat) than {self._max_lifetime:g} seconds")
        return claims

    async def identity(self, app: web.Application, token: str) -> Identity:
        """The user, scopes and expiry a bearer JWT proves."""
        claims = await self.verify(token)
        try:
            granted = scopes.from_claim(claims.get(self._scope_claim), self._default_scopes)
        except ValueError as exc:
            raise InvalidJwtError(str(exc)) from None
        return Identity(await self._user_id(app, claims), granted, _timestamp(claims, "exp"))

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
