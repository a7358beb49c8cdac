"""IdentityService's web sessions (the gateway's sign-in cookie, ADR 0024) over real gRPC on both backends."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.models import WebSessionRow
from services.store.db.web_sessions import WebSessionRepository
from steward import timeutil
from steward.errors import Reason, StewardError
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import StoreUnderTest
from tests.store.test_identity import _expect, _new_user, _token

HOUR = Duration(seconds=3600)
DIGEST = hashlib.sha256(b"a dev token").hexdigest()


@pytest.fixture
async def sessions(store: StoreUnderTest) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(store.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _create(user_id: str, token_id: str = "", digest: str = "", **ttl: Duration) -> pb.CreateWebSessionRequest:
    times = {"ttl": HOUR, "idle_ttl": HOUR, **ttl}
    return pb.CreateWebSessionRequest(user_id=user_id, token_id=token_id, credential_digest=digest, **times)


async def test_a_session_lives_until_it_ends_and_keeps_only_an_hmac(
    store: StoreUnderTest, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id, user = await _new_user(store)
    token = (await _token(store, user, scopes=["runs:read"])).token
    created = await store.identity.CreateWebSession(_create(user_id, token.id), metadata=store.service("gateway"))
    assert created.secret.startswith("sws_")
    assert (created.session.user_id, created.session.token_id) == (user_id, token.id)
    verified = await store.identity.VerifyWebSession(
        pb.VerifyWebSessionRequest(secret=created.secret), metadata=store.service("gateway")
    )
    assert verified.session.id == created.session.id
    assert list(verified.token.scopes) == ["runs:read"]
    async with sessions() as session:
        row = await session.scalar(select(WebSessionRow).where(WebSessionRow.id == created.session.id))
    assert row is not None
    assert len(row.secret_hmac) == 64
    assert created.secret not in {row.secret_hmac, row.id}
    end = pb.EndWebSessionRequest(secret=created.secret)
    await store.identity.EndWebSession(end, metadata=store.service("gateway"))
    await store.identity.EndWebSession(end, metadata=store.service("gateway"))  # idempotent
    await _expect(
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.TOKEN_INVALID,
        store.identity.VerifyWebSession(pb.VerifyWebSessionRequest(secret=created.secret), metadata=store.service()),
    )


async def test_revoking_the_token_ends_its_sessions(store: StoreUnderTest) -> None:
    user_id, user = await _new_user(store)
    token = (await _token(store, user)).token
    secrets = [
        (await store.identity.CreateWebSession(_create(user_id, token.id), metadata=store.service())).secret
        for _ in range(2)
    ]
    await store.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=token.id), metadata=user)
    for secret in secrets:
        await _expect(
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.TOKEN_INVALID,
            store.identity.VerifyWebSession(pb.VerifyWebSessionRequest(secret=secret), metadata=store.service()),
        )
    # A revoked token, or another user's, starts no session.
    other_id, _ = await _new_user(store, "Eve")
    for request in (_create(user_id, token.id), _create(other_id, (await _token(store, user)).token.id)):
        await _expect(
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.TOKEN_INVALID,
            store.identity.CreateWebSession(request, metadata=store.service()),
        )


async def test_only_services_and_exactly_one_binding(store: StoreUnderTest) -> None:
    user_id, user = await _new_user(store)
    token = (await _token(store, user)).token
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.PERMISSION_DENIED,
        store.identity.CreateWebSession(_create(user_id, token.id), metadata=user),
    )
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.PERMISSION_DENIED,
        store.identity.VerifyWebSession(pb.VerifyWebSessionRequest(secret="sws_x"), metadata=user),
    )
    for bad in (
        _create(user_id),
        _create(user_id, token.id, DIGEST),
        _create(user_id, digest="ABC"),
        _create(user_id, token.id, ttl=Duration(seconds=0)),
    ):
        await _expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
            store.identity.CreateWebSession(bad, metadata=store.service()),
        )
    digest_session = await store.identity.CreateWebSession(_create(user_id, digest=DIGEST), metadata=store.service())
    verified = await store.identity.VerifyWebSession(
        pb.VerifyWebSessionRequest(secret=digest_session.secret), metadata=store.service()
    )
    assert verified.session.credential_digest == DIGEST
    assert not verified.HasField("token")


async def test_sessions_expire_absolutely_with_their_token_and_when_idle(
    store: StoreUnderTest, sessions: async_sessionmaker[AsyncSession]
) -> None:
    repository = WebSessionRepository(sessions, b"test-pepper-" + b"x" * 32)
    user_id, user = await _new_user(store)
    short = (await _token(store, user, ttl=Duration(seconds=1800))).token
    session, secret = await repository.create(user_id, short.id, "", timedelta(hours=2), timedelta(minutes=10))
    start = timeutil.aware(session.create_time.ToDatetime())
    assert session.expire_time.ToDatetime() <= short.expire_time.ToDatetime()  # never outlives its token
    # Used every 9 minutes it stays live (each use moves the idle limit), until the token's expiry ends it.
    moment = start
    for _ in range(3):
        moment += timedelta(minutes=9)
        await repository.verify(secret, now=moment)
    with pytest.raises(StewardError, match="not valid"):
        await repository.verify(secret, now=start + timedelta(minutes=31))
    # Unused for longer than its idle limit, a session ends.
    _, idle = await repository.create(user_id, "", DIGEST, timedelta(hours=2), timedelta(minutes=10))
    await repository.verify(idle, now=start + timedelta(minutes=5))
    with pytest.raises(StewardError, match="not valid"):
        await repository.verify(idle, now=start + timedelta(minutes=16))
