"""A provider key put through the API leaks nowhere: logs, events, errors, responses, database files."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from fakes.upstream import Fail, FakeUpstream, Reply
from steward.logs import configure_logging
from steward.provider.v1 import key_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from tests.provider.harness import ask, provider_for


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


async def test_a_canary_key_appears_nowhere(
    fake_upstream: FakeUpstream, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    canary = f"sk-canary-{uuid.uuid4()}"
    configure_logging("provider", "DEBUG", json=True)  # every logger, SQL statements and parameters included
    responses: list[bytes] = []
    errors: list[str] = []
    async with provider_for(fake_upstream, tmp_path) as provider:
        user = provider.user()
        put = await provider.stub.PutKey(
            pb.PutKeyRequest(provider="fake-anthropic", secret=canary, label="canary"), metadata=user
        )
        responses.append(put.SerializeToString())
        assert put.key.last4 == canary[-4:]
        admin_put = await provider.stub.PutKey(
            pb.PutKeyRequest(scope=key_pb2.KEY_SCOPE_INSTANCE, provider="fake-openai", secret=canary),
            metadata=provider.admin(),
        )
        responses.append(admin_put.SerializeToString())
        responses.append((await provider.stub.ListKeys(pb.ListKeysRequest(), metadata=user)).SerializeToString())
        fake_upstream.enqueue(
            Reply(text="fine"), Fail(401, message=f"bad key {canary}"), Fail(500), Fail(500), Fail(500)
        )
        responses.extend(e.SerializeToString() for e in await provider.collect(ask(), user))
        for request in (ask(), ask(route="smart")):
            try:
                responses.extend(e.SerializeToString() for e in await provider.collect(request, user))
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
        usage = await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(), metadata=user)
        responses.append(usage.SerializeToString())
        deleted = await provider.stub.DeleteKey(pb.DeleteKeyRequest(id=put.key.id), metadata=user)
        responses.append(deleted.SerializeToString())
    configure_logging("tests", "WARNING", json=False)  # back to quiet for the tests that follow
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    assert "rpc" in logs or "http" in logs or "sqlalchemy" in logs.lower()  # logging was on and captured
    assert errors  # the failing upstream did produce errors to inspect
    assert canary not in logs
    assert all(canary.encode() not in response for response in responses)
    assert all(canary not in error for error in errors)
    assert _files_containing(tmp_path, canary.encode()) == []
    assert fake_upstream.requests  # the key did reach the upstream, where it belongs
