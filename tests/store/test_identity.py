"""IdentityService over real gRPC on both backends: users, API tokens, and what the database keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.identity import IdentityRepository
from services.store.db.models import ApiTokenRow
from steward.errors import StewardError, from_rpc_error
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest


async def _expect(code: grpc.StatusCode, reason: str, call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason) == (code, reason)
    return raised.value


async def _new_user(store: StoreUnderTest, display_name: str = "Ada") -> tuple[str, Metadata]:
    """A user created through the contract, and call metadata acting as that user."""
    created = await store.identity.CreateUser(pb.CreateUserRequest(display_name=display_name), metadata=store.service())
    return created.user.id, store.user(created.user.id)


async def _token(store: StoreUnderTest, user: Metadata, **fields: Any) -> pb.CreateApiTokenResponse:
    response: pb.CreateApiTokenResponse = await store.identity.CreateApiToken(
        pb.CreateApiTokenRequest(**fields), metadata=user
    )
    return response


@pytest.fixture
async def sessions(store: StoreUnderTest) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on the database the store under test serves."""
    engine = create_engine(store.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_only_services_create_users(store: StoreUnderTest) -> None:
    created = await store.identity.CreateUser(pb.CreateUserRequest(display_name="Ada"), metadata=store.service())
    assert created.user.id
    assert created.user.display_name == "Ada"
    assert created.user.HasField("create_time")
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        store.identity.CreateUser(pb.CreateUserRequest(display_name="Eve"), metadata=store.user()),
    )


async def test_create_user_is_idempotent_per_service_and_request_id(store: StoreUnderTest) -> None:
    request = pb.CreateUserRequest(display_name="Ada", request_id="user-req-1")
    first = await store.identity.CreateUser(request, metadata=store.service("cli"))
    again = await store.identity.CreateUser(request, metadata=store.service("cli"))
    other_service = await store.identity.CreateUser(request, metadata=store.service("gateway"))
    other_key = await store.identity.CreateUser(
        pb.CreateUserRequest(display_name="Ada", request_id="user-req-2"), metadata=store.service("cli")
    )
    assert again.user == first.user
    assert len({first.user.id, other_service.user.id, other_key.user.id}) == 3


async def test_get_user_returns_the_caller(store: StoreUnderTest) -> None:
    user_id, user = await _new_user(store, "Grace")
    got = await store.identity.GetUser(pb.GetUserRequest(), metadata=user)
    assert (got.user.id, got.user.display_name) == (user_id, "Grace")
    await _expect(
        grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND", store.identity.GetUser(pb.GetUserRequest(), metadata=store.user())
    )
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        store.identity.GetUser(pb.GetUserRequest(), metadata=store.service()),
    )


async def test_token_is_shown_once_and_verifies_to_its_owner(store: StoreUnderTest) -> None:
    user_id, user = await _new_user(store)
    created = await _token(store, user, label="laptop", scopes=["runs:write", "agents.read"])
    assert created.secret.startswith("stw_")
    assert created.secret.startswith(f"stw_{created.token.prefix}_")
    assert created.token.user_id == user_id
    assert list(created.token.scopes) == ["runs:write", "agents.read"]
    assert not created.token.HasField("expire_time")
    verified = await store.identity.VerifyApiToken(
        pb.VerifyApiTokenRequest(secret=created.secret), metadata=store.service("gateway")
    )
    assert verified.token == created.token
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        store.identity.VerifyApiToken(pb.VerifyApiTokenRequest(secret=created.secret), metadata=user),
    )


async def test_token_ttl_sets_expire_time(store: StoreUnderTest) -> None:
    _, user = await _new_user(store)
    created = await _token(store, user, ttl=Duration(seconds=3600))
    expires = created.token.expire_time.ToDatetime() - created.token.create_time.ToDatetime()
    assert expires == timedelta(hours=1)


async def test_token_for_a_caller_without_user_record_is_user_not_found(store: StoreUnderTest) -> None:
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
        store.identity.CreateApiToken(pb.CreateApiTokenRequest(label="x"), metadata=store.user()),
    )


async def test_every_bad_token_fails_alike(store: StoreUnderTest) -> None:
    _, user = await _new_user(store)
    good = (await _token(store, user)).secret
    revoked = await _token(store, user)
    await store.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=revoked.token.id), metadata=user)
    tail = good[-1]
    presented = [
        good[:-1] + ("A" if tail != "A" else "B"),  # wrong secret, known prefix
        "stw_" + "Z" * 12 + good[16:],  # unknown prefix
        "",
        "stw_",
        good + "\n",
        good[:-1],
        "xyz" + good[3:],
        good.replace("_", "-", 2),
        revoked.secret,
    ]
    messages = set()
    for secret in presented:
        error = await _expect(
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_INVALID",
            store.identity.VerifyApiToken(pb.VerifyApiTokenRequest(secret=secret), metadata=store.service()),
        )
        messages.add(error.details())
    assert len(messages) == 1


async def test_expired_token_is_invalid(store: StoreUnderTest, sessions: async_sessionmaker[AsyncSession]) -> None:
    repository = IdentityRepository(sessions, b"test-pepper-" + b"x" * 32)
    user = await repository.create_user("service:tests", "Expiring", None)
    token, secret = await repository.create_token(user.id, "short", [], timedelta(minutes=5))
    expire_time = token.expire_time.ToDatetime(tzinfo=UTC)
    create_time = token.create_time.ToDatetime(tzinfo=UTC)
    assert (await repository.verify_token(secret, now=create_time + timedelta(minutes=4))).id == token.id
    messages = set()
    for moment in (expire_time, expire_time + timedelta(days=1)):
        with pytest.raises(StewardError) as raised:
            await repository.verify_token(secret, now=moment)
        assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
        messages.add(raised.value.message)
    with pytest.raises(StewardError) as wrong:
        await repository.verify_token(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert messages == {wrong.value.message}


async def test_tokens_list_newest_first_without_secrets(store: StoreUnderTest) -> None:
    _, user = await _new_user(store)
    created = [await _token(store, user, label=f"t{index}") for index in range(3)]
    listed = await store.identity.ListApiTokens(pb.ListApiTokensRequest(), metadata=user)
    assert [token.id for token in listed.tokens] == [c.token.id for c in reversed(created)]
    assert not listed.next_page_token
    wire = listed.SerializeToString()
    for item in created:
        assert item.secret.encode() not in wire
        assert item.secret.removeprefix(f"stw_{item.token.prefix}_").encode() not in wire
    first = await store.identity.ListApiTokens(pb.ListApiTokensRequest(page_size=2), metadata=user)
    rest = await store.identity.ListApiTokens(
        pb.ListApiTokensRequest(page_size=2, page_token=first.next_page_token), metadata=user
    )
    assert [t.id for t in [*first.tokens, *rest.tokens]] == [t.id for t in listed.tokens]
    assert not rest.next_page_token


async def test_revoke_is_idempotent_and_ends_the_token(store: StoreUnderTest) -> None:
    _, user = await _new_user(store)
    created = await _token(store, user)
    first = await store.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=created.token.id), metadata=user)
    again = await store.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=created.token.id), metadata=user)
    assert first.token.HasField("revoke_time")
    assert again.token == first.token
    listed = await store.identity.ListApiTokens(pb.ListApiTokensRequest(), metadata=user)
    assert listed.tokens[0].revoke_time == first.token.revoke_time
    await _expect(
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
        store.identity.VerifyApiToken(pb.VerifyApiTokenRequest(secret=created.secret), metadata=store.service()),
    )


async def test_another_users_tokens_are_not_found(store: StoreUnderTest) -> None:
    _, alice = await _new_user(store, "Alice")
    _, bob = await _new_user(store, "Bob")
    created = await _token(store, alice)
    listed = await store.identity.ListApiTokens(pb.ListApiTokensRequest(), metadata=bob)
    assert created.token.id not in {token.id for token in listed.tokens}
    for token_id in (created.token.id, "no-such-token"):
        await _expect(
            grpc.StatusCode.NOT_FOUND,
            "TOKEN_NOT_FOUND",
            store.identity.RevokeApiToken(pb.RevokeApiTokenRequest(id=token_id), metadata=bob),
        )
    verified = await store.identity.VerifyApiToken(
        pb.VerifyApiTokenRequest(secret=created.secret), metadata=store.service()
    )
    assert not verified.token.HasField("revoke_time")


async def test_database_never_holds_the_token_text(
    store: StoreUnderTest, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, user = await _new_user(store)
    created = await _token(store, user, label="db-check", scopes=["runs:read"])
    secret_part = created.secret.removeprefix(f"stw_{created.token.prefix}_")
    async with sessions() as session:
        row = await session.scalar(select(ApiTokenRow).where(ApiTokenRow.id == created.token.id))
        assert row is not None
        values = [str(getattr(row, column.key)) for column in ApiTokenRow.__table__.columns]
        all_rows = (await session.scalars(select(ApiTokenRow))).all()
    assert row.prefix == created.token.prefix
    for value in values:
        assert secret_part not in value
        assert created.secret not in value
    dump = repr([[getattr(r, c.key) for c in ApiTokenRow.__table__.columns] for r in all_rows])
    assert secret_part not in dump


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"label": "x" * 201}, "label"),
        ({"label": "bad\x00label"}, "label"),
        ({"scopes": ["Runs"]}, "scopes[0]"),
        ({"scopes": ["runs:read", "x" * 65]}, "scopes[1]"),
        ({"scopes": ["runs\x00"]}, "scopes[0]"),
        ({"scopes": [f"s{index}" for index in range(21)]}, "scopes"),
        ({"ttl": Duration(seconds=0)}, "ttl"),
        ({"ttl": Duration(seconds=-5)}, "ttl"),
        ({"ttl": Duration(seconds=367 * 86400)}, "ttl"),
    ],
)
async def test_create_token_validates(store: StoreUnderTest, request_fields: dict[str, Any], field: str) -> None:
    _, user = await _new_user(store)
    error = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        store.identity.CreateApiToken(pb.CreateApiTokenRequest(**request_fields), metadata=user),
    )
    assert from_rpc_error(error).metadata["field"] == field


@pytest.mark.parametrize("display_name", ["x" * 201, "nul\x00name"])
async def test_create_user_validates_display_name(store: StoreUnderTest, display_name: str) -> None:
    error = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        store.identity.CreateUser(pb.CreateUserRequest(display_name=display_name), metadata=store.service()),
    )
    assert from_rpc_error(error).metadata["field"] == "display_name"
