"""Internal principal tokens: who a call is for, signed, short-lived.

The gateway (or a service acting for a user) mints a token; every service
verifies it in its server interceptor and keeps the principal in a contextvar
for the duration of the call. Repositories scope queries by
`current_principal()`, never by an id taken from a request body.
"""

from __future__ import annotations

import contextvars
import hashlib
import time
import uuid
from dataclasses import dataclass

import grpc
import jwt

from steward.errors import StewardError, unauthenticated
from steward.settings import CommonSettings

__all__ = [
    "AUDIENCE",
    "METADATA_KEY",
    "SERVICE_PREFIX",
    "Principal",
    "TokenSigner",
    "TokenVerifier",
    "current_principal",
    "maybe_current_principal",
    "require_service",
    "require_user",
    "reset_principal",
    "service_principal",
    "set_principal",
    "verifier_for",
]

METADATA_KEY = "x-steward-principal"
AUDIENCE = "steward-internal"
ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 300
# Owner columns hold user ids of at most this many printable characters.
MAX_PRINCIPAL_LENGTH = 128
# Tokens minted by a client are reused until this many seconds before expiry.
_REFRESH_MARGIN_SECONDS = 60


SERVICE_PREFIX = "service:"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user, optionally acted for by a service, or a service itself."""

    user_id: str
    actor: str = ""  # the service acting for the user, e.g. "runtime"; empty for the user
    issuer: str = ""

    @property
    def is_service(self) -> bool:
        """True for a service acting on its own account (`service:<name>`), not for a user."""
        return self.user_id.startswith(SERVICE_PREFIX)


def service_principal(name: str) -> Principal:
    """The principal of a service acting on its own account, e.g. a runtime claiming runs."""
    return Principal(user_id=f"{SERVICE_PREFIX}{name}")


def require_service() -> Principal:
    """The current principal if it is a service; PERMISSION_DENIED for a user."""
    principal = current_principal()
    if not principal.is_service:
        raise StewardError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "only services may call this")
    return principal


def require_user() -> Principal:
    """The current principal if it is a user (possibly acted for by a service)."""
    principal = current_principal()
    if principal.is_service:
        raise StewardError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "this call acts for a user")
    return principal


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("steward_principal", default=None)


def current_principal() -> Principal:
    """The principal of the call being served; raises UNAUTHENTICATED outside one."""
    principal = _current.get()
    if principal is None:
        raise unauthenticated("PRINCIPAL_MISSING", "no principal for this call")
    return principal


def maybe_current_principal() -> Principal | None:
    """The principal of the call being served, or None."""
    return _current.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Make `principal` current in this context; reset with `reset_principal`."""
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    """Undo a `set_principal`."""
    _current.reset(token)


def key_id(secret: str) -> str:
    """A short, non-secret id for a signing key, sent as the token's `kid` header."""
    return hashlib.sha256(b"steward-internal-key:" + secret.encode()).hexdigest()[:16]


class TokenSigner:
    """Mints internal principal tokens for one issuer."""

    def __init__(self, secret: str, issuer: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._secret = secret
        self._kid = key_id(secret)
        self._issuer = issuer
        self._ttl = ttl_seconds
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}

    @property
    def issuer(self) -> str:
        return self._issuer

    def mint(self, user_id: str, *, actor: str = "", ttl_seconds: int | None = None) -> str:
        """A fresh token for `user_id`, optionally acted for by `actor`."""
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": AUDIENCE,
            "sub": user_id,
            "iat": now,
            "exp": now + (ttl_seconds if ttl_seconds is not None else self._ttl),
            "jti": uuid.uuid4().hex,
        }
        if actor:
            claims["act"] = {"sub": actor}  # RFC 8693 actor claim
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"kid": self._kid})

    def token_for(self, principal: Principal) -> str:
        """A cached token for `principal`, acted for by this issuer when it is a service."""
        key = (principal.user_id, principal.actor)
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and cached[1] - now > _REFRESH_MARGIN_SECONDS:
            return cached[0]
        token = self.mint(principal.user_id, actor=principal.actor)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (token, now + self._ttl)
        return token


_MAX_VERIFIED = 10_000


class TokenVerifier:
    """Verifies internal principal tokens (signature, audience, expiry).

    It accepts the current key and, during a rotation, the previous one; the
    token's `kid` header picks the key.
    """

    def __init__(self, secret: str, previous_secret: str | None = None) -> None:
        self._keys = {key_id(secret): secret}
        if previous_secret:
            self._keys[key_id(previous_secret)] = previous_secret
        # Tokens already verified → (principal, expiry). Signers reuse a token per principal until near its
        # expiry (TokenSigner.token_for), so a busy caller's token is verified once, not once per call. The same
        # string under the same keys verifies the same way; only its expiry is checked again.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; raises UNAUTHENTICATED otherwise."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key = self._keys.get(str(jwt.get_unverified_header(token).get("kid", "")))
            if key is None:
                raise unauthenticated("PRINCIPAL_INVALID", "invalid principal token: unknown signing key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise unauthenticated("PRINCIPAL_INVALID", f"invalid principal token: {type(exc).__name__}") from exc
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or not user_id:
            raise unauthenticated("PRINCIPAL_INVALID", "principal token names no user")
        if len(user_id) > MAX_PRINCIPAL_LENGTH or not user_id.isprintable():
            raise unauthenticated("PRINCIPAL_INVALID", "principal token names an invalid user id")
        actor = claims.get("act", {})
        if not isinstance(actor, dict) or not isinstance(actor.get("sub", ""), str):
            raise unauthenticated("PRINCIPAL_INVALID", "principal token has a malformed act claim")
        principal = Principal(user_id=user_id, actor=actor.get("sub", ""), issuer=str(claims["iss"]))
        return principal, float(claims["exp"])

    def verify_metadata(self, metadata: grpc.aio.Metadata | None) -> Principal:
        """The principal in call metadata; raises UNAUTHENTICATED when absent or invalid."""
        token = None
        for key, value in metadata or ():
            if key == METADATA_KEY:
                token = value if isinstance(value, str) else value.decode()
                break
        if not token:
            raise unauthenticated("PRINCIPAL_MISSING", "call carries no principal token")
        return self.verify(token)


def is_auth_error(error: StewardError) -> bool:
    """True for errors raised by principal verification."""
    return error.code == grpc.StatusCode.UNAUTHENTICATED


def verifier_for(settings: CommonSettings) -> TokenVerifier:
    """The verifier for a process's settings: the current key, and the previous one if set."""
    previous = settings.internal_secret_previous
    return TokenVerifier(settings.internal_secret.get_secret_value(), previous.get_secret_value() if previous else None)
