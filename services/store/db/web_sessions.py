"""Web sessions: the server side of the web app's sign-in cookie (ADR 0024).

A session's secret (the cookie's value) is `sws_` and `secrets.token_urlsafe(32)`; the store keeps only
HMAC-SHA256(pepper, secret) in hex, unique, and finds the row by it, as it keeps API tokens. A session is bound
either to one of its user's API tokens (`token_id`) or to a credential its caller checks itself
(`credential_digest`: the gateway's dev token). It is live while it has not ended (sign-out), its absolute
`expire_time` (never later than its token's expiry) has not passed, it was used within `idle_seconds`, and its
token is neither revoked nor expired: revoking the token ends every session bound to it, with no write to them.

`last_use_time` is written at most once per `TOUCH_INTERVAL`, so a busy browser does not write on every request;
the idle limit is therefore kept to within that interval.

Every way a presented secret can fail answers the same UNAUTHENTICATED TOKEN_INVALID error with the same message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.identity import token_message
from services.store.db.models import ApiTokenRow, UserRow, WebSessionRow
from steward import timeutil
from steward.errors import StewardError, not_found, unauthenticated
from steward.store.v1 import identity_pb2

SECRET_SCHEME = "sws"  # noqa: S105 - the public start of every session secret, not a secret
SECRET_BYTES = 32
_SECRET_PATTERN = re.compile(rf"{SECRET_SCHEME}_[A-Za-z0-9_-]{{43}}")
TOUCH_INTERVAL = timedelta(minutes=1)
_INVALID_MESSAGE = "the session is not valid"


def _session_invalid() -> StewardError:
    return unauthenticated("TOKEN_INVALID", _INVALID_MESSAGE)


def session_message(row: WebSessionRow) -> identity_pb2.WebSession:
    message = identity_pb2.WebSession(
        id=row.id,
        user_id=row.owner_id,
        token_id=row.token_id or "",
        credential_digest=row.credential_digest,
        create_time=timeutil.timestamp(row.create_time),
        expire_time=timeutil.timestamp(row.expire_time),
        last_use_time=timeutil.timestamp(row.last_use_time),
        end_time=timeutil.timestamp(row.end_time),
    )
    message.idle_ttl.FromSeconds(row.idle_seconds)
    return message


def _token_live(token: ApiTokenRow, moment: datetime) -> bool:
    if token.revoke_time is not None:
        return False
    return token.expire_time is None or timeutil.aware(token.expire_time) > moment


class WebSessionRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the token pepper must not be empty")
        self._sessions = sessions
        self._pepper = pepper

    def _hmac(self, text: str) -> str:
        return hmac.new(self._pepper, text.encode(), hashlib.sha256).hexdigest()

    async def create(
        self, user_id: str, token_id: str, credential_digest: str, ttl: timedelta, idle: timedelta
    ) -> tuple[identity_pb2.WebSession, str]:
        """A new session for `user_id`, bound to its token `token_id` (or to `credential_digest`), and its secret."""
        created = timeutil.now()
        expires = created + ttl
        async with self._sessions() as session, session.begin():
            if await session.get(UserRow, user_id) is None:
                raise not_found("USER_NOT_FOUND", f"user {user_id} not found")
            if token_id:
                token = await session.get(ApiTokenRow, token_id)
                if token is None or token.owner_id != user_id or not _token_live(token, created):
                    raise _session_invalid()
                if token.expire_time is not None:
                    expires = min(expires, timeutil.aware(token.expire_time))
            secret = f"{SECRET_SCHEME}_{secrets.token_urlsafe(SECRET_BYTES)}"
            row = WebSessionRow(
                id=str(uuid.uuid4()),
                owner_id=user_id,
                secret_hmac=self._hmac(secret),
                token_id=token_id or None,
                credential_digest=credential_digest,
                create_time=created,
                expire_time=expires,
                idle_seconds=int(idle.total_seconds()),
                last_use_time=created,
                end_time=None,
            )
            session.add(row)
        return session_message(row), secret

    async def verify(
        self, secret: str, now: datetime | None = None
    ) -> tuple[identity_pb2.WebSession, identity_pb2.ApiToken | None]:
        """The live session `secret` names, and its token (None for a credential_digest session).

        `now` defaults to the current time; tests pass it to check expiry without waiting.
        """
        if _SECRET_PATTERN.fullmatch(secret) is None:
            raise _session_invalid()
        moment = now if now is not None else timeutil.now()
        async with self._sessions() as session, session.begin():
            found = (
                await session.execute(
                    select(WebSessionRow, ApiTokenRow)
                    .outerjoin(ApiTokenRow, ApiTokenRow.id == WebSessionRow.token_id)
                    .where(WebSessionRow.secret_hmac == self._hmac(secret))
                )
            ).one_or_none()
            if found is None:
                raise _session_invalid()
            row, token = found
            last_use = timeutil.aware(row.last_use_time)
            if (
                row.end_time is not None
                or timeutil.aware(row.expire_time) <= moment
                or last_use + timedelta(seconds=row.idle_seconds) <= moment
                or (row.token_id is not None and (token is None or not _token_live(token, moment)))
            ):
                raise _session_invalid()
            if moment - last_use >= TOUCH_INTERVAL:
                row.last_use_time = moment
        return session_message(row), (token_message(token) if token is not None else None)

    async def end(self, secret: str) -> None:
        """End the session `secret` names (sign-out); an unknown or ended one is left as it is."""
        if _SECRET_PATTERN.fullmatch(secret) is None:
            return
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(WebSessionRow)
                .where(WebSessionRow.secret_hmac == self._hmac(secret), WebSessionRow.end_time.is_(None))
                .values(end_time=timeutil.now())
            )
