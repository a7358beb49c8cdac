"""Authentication: bearer tokens in, the caller's principal forwarded to the services.

These credentials are accepted in `Authorization: Bearer <token>`:

- the dev token (`settings.dev_token`, what `make run` prints), compared in constant time; it acts as
  `settings.dev_user_id`;
- API tokens (`stw_<prefix>_<secret>`), verified by the store's `VerifyApiToken`, which only service
  principals may call, so the gateway calls it as `service:gateway`;
- when OIDC is configured, JWTs of the configured issuer (`gateway.auth.oidc`).

A token with scopes (an API token created with some, any JWT) may call only the routes whose scope it holds
(`gateway.auth.scopes`, checked here after authentication); an API token without scopes, and the dev token, have all
their user's rights.

Successful verifications are cached per app for `token_cache_seconds` (0 turns the cache off), keyed by
SHA-256 of the token text, bounded by `token_cache_size`, and never past the token's own expiry. Failures
are never cached. A revoke through this gateway drops the token from its cache at once; a revoke made
elsewhere (another replica) takes effect here within `token_cache_seconds`. No log line or error carries
token text.

Web sessions (ADR 0024). On /api/v1 routes a request without an `Authorization` header may instead present the web
app's session cookie (`steward_session`, set by `POST /api/v1/session`): a random secret whose record the store
keeps (`VerifyWebSession`, asked on every request, never cached, so a sign-out or a revoked token ends it on every
replica at once). A session acts exactly as the credential it is bound to: an API token's user and scopes (and it
ends when the token is revoked or expires), or the dev token (and it ends when the dev token changes). When both
are sent, the `Authorization` header wins. A state-changing request the cookie authenticates must carry the
gateway's own `Origin` (`gateway.auth.origins`). /v1 (the OpenAI API) and /mcp take bearer tokens only.

The dev user and the store. The store assigns user ids and creates tokens only for users it has a record
of, while the dev user's id (`dev-user`) is fixed and has no record. Its tokens therefore belong to a store
user made for it on first need: `CreateUser` as `service:gateway` with a request id derived from
`dev_user_id`, so every replica finds the same record. A token of that record acts as `dev_user_id`, so a
token made with the dev token sees the dev user's conversations and runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import grpc
import structlog
from aiohttp import web

from gateway import problems
from gateway.app_keys import ACCESS, CLIENTS, SETTINGS
from gateway.auth import oidc, origins, scopes
from steward.auth import Principal, reset_principal, service_principal, set_principal
from steward.errors import Reason, StewardError
from steward.store.v1 import identity_pb2
from steward.store.v1 import store_service_pb2 as store_pb

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
QUERY_TOKEN_KEYS = frozenset({"access_token", "token", "api_key"})
GATEWAY = service_principal("gateway")
API_TOKEN_START = "stw_"  # noqa: S105 - the public start of every API token, not a secret
MAX_TOKEN_LENGTH = 256
SESSION_COOKIE = "steward_session"
SESSION_PATH_PREFIX = "/api/v1/"  # where the session cookie is a credential
DEV_RECORD_REQUEST_PREFIX = "gateway-dev-user:"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="steward"'}
INVALID_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="steward", error="invalid_token"'}

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for, and how it proved it."""

    user_id: str
    via: str  # "dev_token", "api_token" or "oidc"
    token_id: str = ""  # the API token's id; empty for the dev token and JWTs
    token_expires: float | None = None  # when the API token or JWT expires (time.time()); None: never
    scopes: frozenset[str] | None = None  # what the token may do (gateway.auth.scopes); None: all the user's rights
    session_id: str = ""  # the web session (cookie) the request came with; empty for a bearer token
    session_expires: float | None = None  # when that session ends whatever its use (time.time())


CALLER = web.RequestKey("caller", Caller)


@dataclass(frozen=True, slots=True)
class _Entry:
    user_id: str
    token_id: str
    until: float  # time.monotonic()
    expires: float | None  # the token's own expiry (time.time()); None: never
    scopes: frozenset[str] | None


def _scopes(token: identity_pb2.ApiToken) -> frozenset[str] | None:
    """A token's scopes; None (all its user's rights) when it has none."""
    return frozenset(token.scopes) if token.scopes else None


def _expires(token: identity_pb2.ApiToken) -> float | None:
    """When a token expires (time.time()), or None when it never does."""
    if not token.HasField("expire_time"):
        return None
    return token.expire_time.seconds + token.expire_time.nanos / 1e9


def dev_token_digest(app: web.Application) -> str:
    """SHA-256 (hex) of the dev token: what a dev-token web session is bound to."""
    return hashlib.sha256(app[SETTINGS].dev_token.get_secret_value().encode()).hexdigest()


class TokenCache:
    """Verified API tokens by SHA-256 of their text; least recently used out first."""

    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._generation = 0

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, user_id: str, token: identity_pb2.ApiToken, *, generation: int) -> None:
        """Remember a verified token, unless a token was forgotten since its verification began (`generation`):
        the store may have answered before a revoke that this cache has already applied."""
        if self._ttl <= 0 or self._max <= 0 or generation != self._generation:
            return
        lifetime = self._ttl
        expires = _expires(token)
        if expires is not None:
            lifetime = min(lifetime, expires - time.time())
        if lifetime <= 0:
            return
        self._entries[key] = _Entry(user_id, token.id, self._clock() + lifetime, _expires(token), _scopes(token))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    @property
    def generation(self) -> int:
        """Advanced by every `forget_token`: a verification begun before one may not be cached after it."""
        return self._generation

    def forget_token(self, token_id: str) -> None:
        self._generation += 1
        for key in [k for k, entry in self._entries.items() if entry.token_id == token_id]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class AuthState:
    """One gateway app's authentication state: its cache of verified tokens, and the dev user's store record."""

    cache: TokenCache
    dev_record: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


AUTH = web.AppKey("auth", AuthState)


def install(app: web.Application) -> None:
    """Give a gateway app its authentication state (a token cache of its own)."""
    settings = app[SETTINGS]
    app[AUTH] = AuthState(TokenCache(settings.token_cache_seconds, settings.token_cache_size))
    oidc.install(app)


def _state(app: web.Application) -> AuthState:
    return app[AUTH]


def token_cache(app: web.Application) -> TokenCache:
    """The app's cache of verified API tokens."""
    return _state(app).cache


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Calls made inside carry `principal`'s internal token."""
    token = set_principal(principal)
    try:
        yield
    finally:
        reset_principal(token)


async def dev_record_id(app: web.Application) -> str:
    """The store user that holds the dev user's API tokens, created on first need (see the module doc)."""
    state = _state(app)
    if state.dev_record is None:
        async with state.lock:
            if state.dev_record is None:
                settings = app[SETTINGS]
                request = store_pb.CreateUserRequest(
                    display_name=settings.dev_user_id[:200],
                    request_id=f"{DEV_RECORD_REQUEST_PREFIX}{settings.dev_user_id}",
                )
                with acting_as(GATEWAY):
                    reply = await app[CLIENTS].identity.CreateUser(request)
                state.dev_record = reply.user.id
    return state.dev_record


@asynccontextmanager
async def as_token_owner(request: web.Request) -> AsyncIterator[None]:
    """Store identity calls made inside act for the store user that owns the caller's tokens."""
    caller = request[CALLER]
    owner = caller.user_id
    if owner == request.app[SETTINGS].dev_user_id:
        owner = await dev_record_id(request.app)
    with acting_as(Principal(user_id=owner)):
        yield


def _invalid(detail: str = "the token is not valid") -> problems.HttpError:
    return problems.HttpError(401, "TOKEN_INVALID", detail, headers=INVALID_CHALLENGE)


def _no_query_token(request: web.Request) -> None:
    if any(key.lower() in QUERY_TOKEN_KEYS for key in request.query):
        raise problems.HttpError(400, "INVALID_ARGUMENT", "tokens are not accepted in the query string")


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header:
        raise problems.HttpError(401, "TOKEN_MISSING", "an Authorization: Bearer token is required", headers=CHALLENGE)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _invalid("the Authorization header must be 'Bearer <token>'")
    if not token.isascii():  # no token is anything else; comparing one that is not would fail to encode
        raise _invalid()
    return token


async def _verify_api_token(app: web.Application, token: str) -> Caller:
    cache = _state(app).cache
    key = TokenCache.key(token)
    hit = cache.get(key)
    if hit is not None:
        return Caller(hit.user_id, "api_token", hit.token_id, hit.expires, hit.scopes)
    generation = cache.generation
    try:
        with acting_as(GATEWAY):
            reply = await app[CLIENTS].identity.VerifyApiToken(store_pb.VerifyApiTokenRequest(secret=token))
    except StewardError as error:
        if error.code == grpc.StatusCode.UNAUTHENTICATED and error.reason == Reason.TOKEN_INVALID:
            log.info("api_token_refused")
            raise _invalid() from None
        raise
    record = reply.token
    user_id = record.user_id
    if not user_id or user_id.startswith("service:"):
        raise _invalid()
    if user_id == await dev_record_id(app):
        user_id = app[SETTINGS].dev_user_id
    cache.put(key, user_id, record, generation=generation)
    return Caller(user_id, "api_token", record.id, _expires(record), _scopes(record))


def _is_dev_token(app: web.Application, token: str) -> bool:
    return hmac.compare_digest(token.encode(), app[SETTINGS].dev_token.get_secret_value().encode())


async def session_credential(app: web.Application, token: str) -> Caller:
    """The caller a token offered to sign in proves: the dev token or an API token (401 TOKEN_INVALID otherwise;
    a JWT signs in through OIDC's own flow, not here)."""
    if token.isascii() and _is_dev_token(app, token):
        return Caller(app[SETTINGS].dev_user_id, "dev_token")
    if not token.startswith(API_TOKEN_START) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise _invalid("sign in with an API token or the dev token")
    return await _verify_api_token(app, token)


def _session_invalid() -> problems.HttpError:
    return _invalid("the session is not valid (signed out, expired, or its token was revoked)")


async def session_caller(app: web.Application, secret: str) -> Caller:
    """The caller a web session secret (the cookie's value) proves, as the credential it is bound to."""
    if not secret.isascii() or len(secret) > MAX_TOKEN_LENGTH:
        raise _session_invalid()
    try:
        with acting_as(GATEWAY):
            reply = await app[CLIENTS].identity.VerifyWebSession(store_pb.VerifyWebSessionRequest(secret=secret))
    except StewardError as error:
        if error.code == grpc.StatusCode.UNAUTHENTICATED and error.reason == Reason.TOKEN_INVALID:
            raise _session_invalid() from None
        raise
    session = reply.session
    ends = session.expire_time.seconds + session.expire_time.nanos / 1e9
    dev_record = await dev_record_id(app)
    if session.credential_digest:  # a dev-token session: it ends when the dev token changes
        if session.user_id != dev_record or not hmac.compare_digest(session.credential_digest, dev_token_digest(app)):
            raise _session_invalid()
        return Caller(app[SETTINGS].dev_user_id, "dev_token", session_id=session.id, session_expires=ends)
    token = reply.token
    user_id = token.user_id
    if not user_id or user_id.startswith("service:") or user_id != session.user_id:
        raise _session_invalid()
    if user_id == dev_record:
        user_id = app[SETTINGS].dev_user_id
    return Caller(user_id, "api_token", token.id, _expires(token), _scopes(token), session.id, ends)


async def authenticate(request: web.Request) -> Caller:
    """The caller a request's bearer token (or, on /api/v1, its session cookie) proves; raises a 400/401/403
    HttpError otherwise."""
    _no_query_token(request)
    if "Authorization" not in request.headers and request.path.startswith(SESSION_PATH_PREFIX):
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            return await session_caller(request.app, secret)
    token = _bearer(request)
    if _is_dev_token(request.app, token):
        return Caller(request.app[SETTINGS].dev_user_id, "dev_token")
    jwts = oidc.verifier(request.app)
    if jwts is not None and oidc.looks_like_jwt(token):
        try:
            identity = await jwts.identity(request.app, token)
        except oidc.InvalidJwtError as exc:
            raise _invalid(str(exc)) from None
        return Caller(identity.user_id, "oidc", token_expires=identity.expires, scopes=identity.scopes)
    # Only text shaped like an API token is worth a store call; anything else is refused here.
    if not token.startswith(API_TOKEN_START) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise _invalid()
    return await _verify_api_token(request.app, token)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    if access.is_public(request):
        return await handler(request)
    try:
        caller = await authenticate(request)
        if caller.session_id:
            origins.check(request)  # CSRF: a browser adds the cookie on its own, never a bearer token
        scopes.check(request, caller.scopes)
    except problems.HttpError as exc:  # a path may add to its challenge (/mcp names its RFC 9728 metadata)
        challenge = access.challenges.get(request.path)
        raise (challenge(request, exc) if challenge is not None else exc) from None
    request[CALLER] = caller
    bound: dict[str, str] = {"user_id": caller.user_id}
    if caller.token_id:
        bound["token_id"] = caller.token_id
    principal_token = set_principal(Principal(user_id=caller.user_id))
    try:
        with structlog.contextvars.bound_contextvars(**bound):
            return await handler(request)
    finally:
        reset_principal(principal_token)
