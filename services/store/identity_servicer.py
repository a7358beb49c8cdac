"""IdentityService: a thin proto <-> repository adapter for users and API tokens.

CreateUser and VerifyApiToken serve service principals only (the CLI, the
gateway); every other RPC acts for the calling user, whose id comes from the
verified principal and never from the request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import validation as v
from services.store.db.identity import IdentityRepository
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


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, identity: IdentityRepository) -> None:
        self._identity = identity

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


def identity_servicer(sessions: async_sessionmaker[AsyncSession], pepper: bytes) -> IdentityServicer:
    """The IdentityService servicer over `sessions`, keying token HMACs with `pepper`."""
    return IdentityServicer(IdentityRepository(sessions, pepper))
