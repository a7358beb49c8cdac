"""IdentityService: a thin proto <-> repository adapter for users and API tokens.

CreateUser, VerifyApiToken and the web session RPCs (CreateWebSession,
VerifyWebSession, EndWebSession: the gateway's sign-in cookie, ADR 0024) serve
service principals only (the CLI, the gateway); every other RPC acts for the
calling user, whose id comes from the verified principal and never from the
request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import validation as v
from services.store.db.identity import IdentityRepository
from services.store.db.web_sessions import WebSessionRepository
from services.store.text import no_nul, plain_text
from steward.auth import require_service, require_user
from steward.errors import invalid_argument
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_DISPLAY_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 200
MAX_SCOPES = 20
SCOPE_PATTERN = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
MAX_TOKEN_TTL = timedelta(days=366)
MAX_SESSION_TTL = timedelta(days=366)
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_SECRET_LENGTH = 256


def _scopes(values: list[str]) -> list[str]:
    if len(values) > MAX_SCOPES:
        raise invalid_argument("scopes", f"at most {MAX_SCOPES} scopes")
    for index, scope in enumerate(values):
        no_nul(scope, f"scopes[{index}]")
        if SCOPE_PATTERN.fullmatch(scope) is None:
            raise invalid_argument(f"scopes[{index}]", f"scopes[{index}] must match {SCOPE_PATTERN.pattern}")
    return values


def _ttl(request: pb.CreateApiTokenRequest) -> timedelta | None:
    if not request.HasField("ttl"):
        return None
    ttl = request.ttl.ToTimedelta()
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise invalid_argument("ttl", f"ttl must be positive and at most {MAX_TOKEN_TTL.days} days")
    return ttl


def _session_ttl(request: pb.CreateWebSessionRequest, name: Literal["ttl", "idle_ttl"]) -> timedelta:
    ttl: timedelta = getattr(request, name).ToTimedelta()
    if not (request.HasField(name) and timedelta(seconds=1) <= ttl <= MAX_SESSION_TTL):
        raise invalid_argument(name, f"{name} must be between 1 second and {MAX_SESSION_TTL.days} days")
    return ttl


def _binding(request: pb.CreateWebSessionRequest) -> tuple[str, str]:
    """The session's token id or credential digest: exactly one of them."""
    if bool(request.token_id) == bool(request.credential_digest):
        raise invalid_argument("token_id", "exactly one of token_id and credential_digest is required")
    if request.credential_digest and DIGEST_PATTERN.fullmatch(request.credential_digest) is None:
        raise invalid_argument("credential_digest", "credential_digest must be a SHA-256 in lowercase hex")
    token_id = v.require_id(request.token_id, "token_id") if request.token_id else ""
    return token_id, request.credential_digest


def _secret(value: str) -> str:
    if len(value) > MAX_SECRET_LENGTH:
        raise invalid_argument("secret", f"secret must be at most {MAX_SECRET_LENGTH} characters")
    return value


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, identity: IdentityRepository, web_sessions: WebSessionRepository) -> None:
        self._identity = identity
        self._web_sessions = web_sessions

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> pb.CreateUserResponse:
        service = require_service()
        user = await self._identity.create_user(
            service.user_id,
            plain_text(request.display_name, "display_name", MAX_DISPLAY_NAME_LENGTH),
            v.optional_request_id(request.request_id),
        )
        return pb.CreateUserResponse(user=user)

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        return pb.GetUserResponse(user=await self._identity.get_user(require_user().user_id))

    async def CreateApiToken(self, request: pb.CreateApiTokenRequest, context: Context) -> pb.CreateApiTokenResponse:
        owner = require_user().user_id
        token, secret = await self._identity.create_token(
            owner,
            plain_text(request.label, "label", MAX_LABEL_LENGTH),
            _scopes(list(request.scopes)),
            _ttl(request),
        )
        return pb.CreateApiTokenResponse(token=token, secret=secret)

    async def VerifyApiToken(self, request: pb.VerifyApiTokenRequest, context: Context) -> pb.VerifyApiTokenResponse:
        require_service()
        return pb.VerifyApiTokenResponse(token=await self._identity.verify_token(request.secret))

    async def ListApiTokens(self, request: pb.ListApiTokensRequest, context: Context) -> pb.ListApiTokensResponse:
        owner = require_user().user_id
        tokens, next_token = await self._identity.list_tokens(owner, request.page_token, v.page_size(request.page_size))
        return pb.ListApiTokensResponse(tokens=tokens, next_page_token=next_token)

    async def RevokeApiToken(self, request: pb.RevokeApiTokenRequest, context: Context) -> pb.RevokeApiTokenResponse:
        owner = require_user().user_id
        token = await self._identity.revoke_token(owner, v.require_id(request.id, "id"))
        return pb.RevokeApiTokenResponse(token=token)

    async def CreateWebSession(
        self, request: pb.CreateWebSessionRequest, context: Context
    ) -> pb.CreateWebSessionResponse:
        require_service()
        token_id, digest = _binding(request)
        session, secret = await self._web_sessions.create(
            v.require_id(request.user_id, "user_id"),
            token_id,
            digest,
            _session_ttl(request, "ttl"),
            _session_ttl(request, "idle_ttl"),
        )
        return pb.CreateWebSessionResponse(session=session, secret=secret)

    async def VerifyWebSession(
        self, request: pb.VerifyWebSessionRequest, context: Context
    ) -> pb.VerifyWebSessionResponse:
        require_service()
        session, token = await self._web_sessions.verify(_secret(request.secret))
        return pb.VerifyWebSessionResponse(session=session, token=token)

    async def EndWebSession(self, request: pb.EndWebSessionRequest, context: Context) -> pb.EndWebSessionResponse:
        require_service()
        await self._web_sessions.end(_secret(request.secret))
        return pb.EndWebSessionResponse()


def identity_servicer(sessions: async_sessionmaker[AsyncSession], pepper: bytes) -> IdentityServicer:
    """The IdentityService servicer over `sessions`, keying token and session HMACs with `pepper`."""
    return IdentityServicer(IdentityRepository(sessions, pepper), WebSessionRepository(sessions, pepper))
