"""The store while its Postgres is away: every call answers UNAVAILABLE (DEPENDENCY_UNAVAILABLE), which its callers
wait out as an outage (ADR 0013), never INTERNAL, which the runtime takes as terminal and fails the run on; and once
the database is back the store serves again (the pool drops its dead connections instead of handing them out).

Found by the chaos suite's F7 (Postgres crash-restart): before, a refused connection or a connection closed in the
middle of a statement reached the interceptor as an unexpected exception, and every streaming run failed."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.store.server import create_server
from steward.errors import Reason, from_rpc_error
from steward.rpc.interceptors import database_away
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.store.conftest import store_settings
from tests.support.backends import drop_database_url, fresh_database_url
from tests.support.grpc_helpers import principal_metadata
from tests.support.tcp_proxy import cutting_proxy


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as raised:  # noqa: BLE001 - the chained exception is the point
        return raised


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
        (
            _raised_from(
                DBAPIError("INSERT ...", {}, Exception("closed")),
                asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            ),
            True,
        ),
        (DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True), True),
        (_raised_from(ValueError("decoding"), ConnectionResetError()), True),
        # A statement that failed on a database that is there is a fault to fix, not an outage to wait out.
        (asyncpg.exceptions.UniqueViolationError("duplicate key value"), False),
        (_raised_from(DBAPIError("SELECT", {}, Exception("x")), asyncpg.exceptions.UndefinedTableError("no")), False),
        (ValueError("a bug"), False),
    ],
)
def test_a_database_away_is_told_from_a_statement_that_failed(error: BaseException, away: bool) -> None:
    assert database_away(error) is away


async def test_the_store_answers_unavailable_while_its_database_is_away_and_serves_once_it_is_back(
    tmp_path: Path,
) -> None:
    url = await fresh_database_url("postgres", tmp_path)
    target = make_url(url)
    async with cutting_proxy(target.port or 5432) as proxy:
        secret = secrets.token_urlsafe(32)
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        server = await create_server(store_settings(through_proxy, secret, tmp_path), "127.0.0.1:0")
        metadata = principal_metadata(secret, f"user-{uuid.uuid4().hex}")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                conversations = pb_grpc.ConversationServiceStub(channel)
                request = pb.CreateConversationRequest(title="before")
                await conversations.CreateConversation(request, metadata=metadata)

                await proxy.stop()  # the database goes away: its connections reset, new ones refused
                with pytest.raises(grpc.aio.AioRpcError) as away:
                    await conversations.CreateConversation(request, metadata=metadata)
                error = from_rpc_error(away.value)
                assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.DEPENDENCY_UNAVAILABLE)

                await proxy.start(proxy.port)  # back, on the same address
                await conversations.CreateConversation(pb.CreateConversationRequest(title="after"), metadata=metadata)
                listed = await conversations.ListConversations(pb.ListConversationsRequest(), metadata=metadata)
                assert sorted(item.title for item in listed.conversations) == ["after", "before"]
        finally:
            await server.stop(0.5)
            await drop_database_url(url)
