"""The confirm service under test, once per backend: SQLite (a file) and Postgres (a fresh database).

The shared server runs without the periodic sweep, so tests see the lazy expiries they cause;
`fresh_confirm` starts a server on a database of its own with any settings (a fast sweep, say).
Postgres follows tests/support/backends.py: skipped locally without a server, required on CI.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update

from services.confirm.db.models import ConfirmationRow, FeedEntryRow, FeedHeadRow
from services.confirm.server import create_server
from services.confirm.settings import ConfirmSettings
from steward.auth import METADATA_KEY, SERVICE_PREFIX, TokenSigner
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirm_service_pb2_grpc as pb_grpc
from steward.confirm.v1 import confirmation_pb2
from steward.db import create_engine, create_sessionmaker
from steward.errors import StewardError, from_rpc_error
from steward.rpc.server import GrpcServer
from tests.support.backends import BACKENDS, drop_database_url, fresh_database_url

Metadata = tuple[tuple[str, str], ...]
ARGUMENTS = {"path": "notes/todo.md", "content": "buy milk", "lines": [1, 2.5]}


def principal(secret: str, user_id: str, actor: str = "") -> Metadata:
    """Call metadata carrying a valid internal token for `user_id`, acted for by `actor` if given."""
    return ((METADATA_KEY, TokenSigner(secret, issuer="tests").mint(user_id, actor=actor)),)


@dataclass
class Alice:
    """One user, as herself and as the runtime acting for her."""

    user_id: str
    me: Metadata
    runtime: Metadata
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class ConfirmUnderTest:
    backend: str
    database_url: str
    secret: str
    server: GrpcServer
    channel: grpc.aio.Channel

    @property
    def stub(self) -> pb_grpc.ConfirmationServiceAsyncStub:
        return pb_grpc.ConfirmationServiceStub(self.channel)

    def person(self, name: str = "") -> Alice:
        user_id = name or f"user-{uuid.uuid4().hex}"
        return Alice(user_id, principal(self.secret, user_id), principal(self.secret, user_id, actor="runtime"))

    def feed(self) -> Metadata:
        """The runtime on its own account: the feed RPCs' principal."""
        return principal(self.secret, f"{SERVICE_PREFIX}runtime", actor="runtime")

    async def create(self, who: Alice, **overrides: Any) -> confirmation_pb2.Confirmation:
        request = create_request(who, **overrides)
        return (await self.stub.CreateConfirmation(request, metadata=who.runtime)).confirmation

    async def decide(
        self, who: Alice, confirmation_id: str, decision: dict[str, Any] | str, **fields: Any
    ) -> confirmation_pb2.Confirmation:
        text = decision if isinstance(decision, str) else json.dumps(decision)
        fields.setdefault("surface", confirmation_pb2.SURFACE_PWA)
        request = pb.DecideConfirmationRequest(confirmation_id=confirmation_id, decision_json=text, **fields)
        return (await self.stub.DecideConfirmation(request, metadata=who.me)).confirmation

    async def get(self, who: Alice, confirmation_id: str) -> confirmation_pb2.Confirmation:
        return (
            await self.stub.GetConfirmation(pb.GetConfirmationRequest(id=confirmation_id), metadata=who.me)
        ).confirmation

    async def audit_kinds(self, who: Alice, confirmation_id: str) -> list[tuple[int, str]]:
        """(kind, reason) of every audit event of a confirmation, oldest first."""
        request = pb.ListAuditEventsRequest(confirmation_id=confirmation_id, page_size=500)
        events = (await self.stub.ListAuditEvents(request, metadata=who.me)).audit_events
        return [(event.kind, event.reason) for event in events]

    @asynccontextmanager
    async def rows(self) -> AsyncIterator[Any]:
        """A session on the service's own database, for moving time and looking at rows."""
        engine = create_engine(self.database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                yield session
        finally:
            await engine.dispose()

    async def make_overdue(self, confirmation_id: str) -> None:
        async with self.rows() as session:
            await session.execute(
                update(ConfirmationRow)
                .where(ConfirmationRow.id == confirmation_id)
                .values(expire_time=datetime.now(UTC) - timedelta(seconds=1))
            )

    async def head(self) -> str:
        """The feed's newest cursor: a stream started after it sees every later decision."""
        async with self.rows() as session:
            return str(await session.scalar(select(FeedHeadRow.last_cursor)))

    async def feed_entries(self, confirmation_id: str) -> list[int]:
        async with self.rows() as session:
            query = select(FeedEntryRow.cursor).where(FeedEntryRow.confirmation_id == confirmation_id)
            return list((await session.scalars(query)).all())


def create_request(who: Alice, **overrides: Any) -> pb.CreateConfirmationRequest:
    values: dict[str, Any] = {
        "request_id": f"{who.run_id}/{uuid.uuid4().hex}/write",
        "run_id": who.run_id,
        "conversation_id": "conversation-1",
        "tool_call_id": f"call-{uuid.uuid4().hex[:8]}",
        "tool_name": "notes.write",
        "arguments_json": json.dumps(ARGUMENTS),
        "preview": confirmation_pb2.Preview(
            kind=confirmation_pb2.PREVIEW_KIND_TEXT, content="+ buy milk", title="todo"
        ),
        "kind": confirmation_pb2.CONFIRMATION_KIND_TOOL_WRITE,
        "lease_epoch": 1,
    }
    values.update(overrides)
    return pb.CreateConfirmationRequest(**values)


async def refused(call: Awaitable[Any]) -> StewardError:
    """The error a call failed with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return from_rpc_error(raised.value)


def confirm_settings(database_url: str, secret: str, data_dir: Path, **overrides: object) -> ConfirmSettings:
    values: dict[str, object] = {
        "internal_secret": secret,
        "database_url": database_url,
        "data_dir": data_dir,
        "log_json": False,
        "sweep_interval": 0,
        "live_poll_seconds": 0.2,
    }
    values.update(overrides)
    return ConfirmSettings.model_validate(values)


@asynccontextmanager
async def running_confirm(backend: str, tmp: Path, **overrides: object) -> AsyncIterator[ConfirmUnderTest]:
    url = await fresh_database_url(backend, tmp, "confirm.db")
    secret = secrets.token_urlsafe(32)
    server = await create_server(confirm_settings(url, secret, tmp, **overrides), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield ConfirmUnderTest(backend, url, secret, server, channel)
    finally:
        await channel.close()
        await server.stop(0.5)
        await drop_database_url(url)


@pytest.fixture(scope="session", params=BACKENDS)
async def confirm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ConfirmUnderTest]:
    backend: str = request.param
    async with running_confirm(backend, tmp_path_factory.mktemp(f"confirm-{backend}")) as running:
        yield running


FreshConfirm = Callable[..., AbstractAsyncContextManager[ConfirmUnderTest]]


@pytest.fixture(params=BACKENDS)
def fresh_confirm(request: pytest.FixtureRequest, tmp_path: Path) -> FreshConfirm:
    """A factory: `async with fresh_confirm(**settings) as confirm:` on a database of its own."""
    backend: str = request.param

    def start(**overrides: object) -> AbstractAsyncContextManager[ConfirmUnderTest]:
        return running_confirm(backend, tmp_path, **overrides)

    return start
