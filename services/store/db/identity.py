"""Users and API tokens.

A token's text is `stw_<prefix>_<secret>`: `prefix` is 12 random alphanumeric
characters, unique, stored in clear and used to find the row; `secret` is
`secrets.token_urlsafe(32)` (43 characters). The store keeps only the prefix
and HMAC-SHA256(pepper, token text) in hex, so a copy of the database cannot be
used to authenticate. A random 256-bit secret needs no slow password hash, and
HMAC keeps verification cheap enough to run on the event loop.

Every way a presented token can fail (malformed, unknown prefix, wrong secret,
revoked, expired) answers the same UNAUTHENTICATED TOKEN_INVALID error with the
same message, so a caller learns nothing about which check failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.models import ApiTokenRow, UserRow
from steward import paging, timeutil
from steward.errors import StewardError, not_found, unauthenticated
from steward.store.v1 import identity_pb2

TOKEN_SCHEME = "stw"  # noqa: S105 - the public start of every token, not a secret
PREFIX_LENGTH = 12
SECRET_BYTES = 32
SECRET_LENGTH = 43  # secrets.token_urlsafe(32): 32 bytes in unpadded base64url
_NEWEST_FIRST = paging.Keyset("tokens.1", (ApiTokenRow.create_time, ApiTokenRow.id), (True, False), (datetime, str))
_PREFIX_ALPHABET = string.ascii_letters + string.digits
# Fixed lengths make the parse unambiguous even though the secret may contain "_".
_TOKEN_PATTERN = re.compile(rf"{TOKEN_SCHEME}_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_[A-Za-z0-9_-]{{{SECRET_LENGTH}}}")
_TOKEN_LENGTH = len(TOKEN_SCHEME) + 1 + PREFIX_LENGTH + 1 + SECRET_LENGTH
_INVALID_TOKEN_MESSAGE = "the API token is not valid"  # noqa: S105 - an error message


def _token_invalid() -> StewardError:
    return unauthenticated("TOKEN_INVALID", _INVALID_TOKEN_MESSAGE)


def _user_not_found(user_id: str) -> StewardError:
    return not_found("USER_NOT_FOUND", f"user {user_id} not found")


def user_message(row: UserRow) -> identity_pb2.User:
    return identity_pb2.User(id=row.id, display_name=row.display_name, create_time=timeutil.timestamp(row.create_time))


def token_message(row: ApiTokenRow) -> identity_pb2.ApiToken:
    """The token's metadata; the row holds no secret to leak."""
    return identity_pb2.ApiToken(
        id=row.id,
        user_id=row.owner_id,
        prefix=row.prefix,
        label=row.label,
        scopes=json.loads(row.scopes),
        create_time=timeutil.timestamp(row.create_time),
        expire_time=timeutil.timestamp(row.expire_time),
        revoke_time=timeutil.timestamp(row.revoke_time),
    )


class IdentityRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the token pepper must not be empty")
        self._sessions = sessions
        self._pepper = pepper

    def _hmac(self, text: str) -> str:
        return hmac.new(self._pepper, text.encode(), hashlib.sha256).hexdigest()

    async def create_user(self, created_by: str, display_name: str, request_id: str | None) -> identity_pb2.User:
        """A new user; a retry with the same (created_by, request_id) returns the first user."""
        if request_id is not None:
            existing = await self._user_by_request(created_by, request_id)
            if existing is not None:
                return existing
        row = UserRow(
            id=str(uuid.uuid4()),
            display_name=display_name,
            created_by=created_by,
            request_id=request_id,
            create_time=timeutil.now(),
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(row)
        except IntegrityError:
            # A concurrent retry with the same key won the insert: answer with its user.
            if request_id is None:
                raise
            existing = await self._user_by_request(created_by, request_id)
            if existing is None:
                raise
            return existing
        return user_message(row)

    async def _user_by_request(self, created_by: str, request_id: str) -> identity_pb2.User | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(UserRow).where(UserRow.created_by == created_by, UserRow.request_id == request_id)
            )
        return None if row is None else user_message(row)

    async def get_user(self, user_id: str) -> identity_pb2.User:
        async with self._sessions() as session:
            row = await session.get(UserRow, user_id)
        if row is None:
            raise _user_not_found(user_id)
        return user_message(row)

    async def create_token(
        self, owner_id: str, label: str, scopes: Sequence[str], ttl: timedelta | None
    ) -> tuple[identity_pb2.ApiToken, str]:
        """A new token for an existing user, and its text (returned here and never again)."""
        async with self._sessions() as session, session.begin():
            if await session.get(UserRow, owner_id) is None:
                raise _user_not_found(owner_id)
            prefix = await _unused_prefix(session)
            text = f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
            created = timeutil.now()
            row = ApiTokenRow(
                id=str(uuid.uuid4()),
                owner_id=owner_id,
                prefix=prefix,
                token_hmac=self._hmac(text),
                label=label,
                scopes=json.dumps(list(scopes), separators=(",", ":")),
                create_time=created,
                expire_time=created + ttl if ttl is not None else None,
                revoke_time=None,
            )
            session.add(row)
        return token_message(row), text

    async def verify_token(self, text: str, now: datetime | None = None) -> identity_pb2.ApiToken:
        """The token `text` names if it is well formed, known, matching, unrevoked and unexpired.

        `now` defaults to the current time; tests pass it to check expiry without waiting.
        """
        match = _TOKEN_PATTERN.fullmatch(text) if len(text) == _TOKEN_LENGTH else None
        if match is None:
            raise _token_invalid()
        presented = self._hmac(text)
        async with self._sessions() as session:
            row = await session.scalar(select(ApiTokenRow).where(ApiTokenRow.prefix == match.group(1)))
        stored = row.token_hmac if row is not None else "0" * len(presented)
        matches = hmac.compare_digest(presented.encode(), stored.encode())
        if row is None or not matches or row.revoke_time is not None:
            raise _token_invalid()
        moment = now if now is not None else timeutil.now()
        if row.expire_time is not None and timeutil.aware(row.expire_time) <= moment:
            raise _token_invalid()
        return token_message(row)

    async def list_tokens(self, owner_id: str, page_token: str, limit: int) -> tuple[list[identity_pb2.ApiToken], str]:
        """The owner's tokens, newest first, and the next page token ("" on the last page)."""
        query = select(ApiTokenRow).where(ApiTokenRow.owner_id == owner_id)
        async with self._sessions() as session:
            return await paging.read_page(session, query, _NEWEST_FIRST, page_token, limit, token_message)

    async def revoke_token(self, owner_id: str, token_id: str) -> identity_pb2.ApiToken:
        """Revoke one of the owner's tokens; revoking again keeps the first revoke_time."""
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(ApiTokenRow)
                .where(ApiTokenRow.id == token_id, ApiTokenRow.owner_id == owner_id)
                .with_for_update()
            )
            if row is None:
                raise not_found("TOKEN_NOT_FOUND", f"API token {token_id} not found")
            if row.revoke_time is None:
                row.revoke_time = timeutil.now()
        return token_message(row)


async def _unused_prefix(session: AsyncSession) -> str:
    """A fresh random prefix not held by any token (the unique constraint backs this up)."""
    while True:
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
        if await session.scalar(select(ApiTokenRow.id).where(ApiTokenRow.prefix == prefix)) is None:
            return prefix
