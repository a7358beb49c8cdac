"""Run event streams that resume by themselves, through a proxy that cuts connections for real, against a stack
whose demo model answers slowly enough (one token per 30 ms) for a stream to be cut while the run goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.retention import RetentionRepository
from steward.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    CursorExpiredError,
    NotFoundError,
    RunEvent,
    StreamPolicy,
    UnavailableError,
)
from steward.timeutil import now
from tests.support.stack import Stack, running_stack
from tests.support.tcp_proxy import CuttingProxy, canned_problem, cutting_proxy

FAST = StreamPolicy(initial_backoff=0.05, max_backoff=0.5)
# About 80 words: the demo model echoes them one token (one event) at a time, for a few seconds.
LONG = " ".join(f"word{index}" for index in range(50))
CUT = 1500  # bytes a cut connection carries: a handful of events, the last one most likely cut in half


@dataclass
class Slow:
    stack: Stack
    url: str
    port: int


@pytest.fixture(scope="module")
async def slow(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Slow]:
    directory: Path = tmp_path_factory.mktemp("client-slow")
    async with running_stack(directory, demo_token_interval=0.03) as stack:
        server = TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)
        await server.start_server()
        try:
            assert server.port is not None
            yield Slow(stack, str(server.make_url("")).rstrip("/"), server.port)
        finally:
            await server.close()


@pytest.fixture
async def proxy(slow: Slow) -> AsyncIterator[CuttingProxy]:
    async with cutting_proxy(slow.port) as running:
        yield running


@pytest.fixture
async def direct(slow: Slow) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(slow.url, slow.stack.dev_token) as steward:
        yield steward


async def _run(direct: AsyncClient, text: str = LONG) -> str:
    conversation = await direct.conversations.create("cut me")
    return (await direct.messages.post(conversation.id, text)).run.id


async def _stored_log(direct: AsyncClient, run_id: str) -> list[RunEvent]:
    """The whole log in one go, once the run is over (a stream of an ended run is read straight from the store)."""
    run = await direct.runs.get(run_id)
    assert run.ended
    return [event async for event in direct.runs.events(run_id)]


def _last_event_id(head: str) -> int | None:
    """The `Last-Event-ID` a request was sent with, if any."""
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "last-event-id":
            return int(value)
    return None


async def _assert_cut_mid_run(direct: AsyncClient, run_id: str, proxy: CuttingProxy, cuts: int) -> None:
    run = await direct.runs.get(run_id)
    assert run.end_time is not None
    assert len(proxy.cut_times) == cuts
    assert all(cut < run.end_time for cut in proxy.cut_times)  # every cut came while the run was still going


async def test_a_stream_cut_three_times_mid_run_yields_every_event_exactly_once(
    slow: Slow, proxy: CuttingProxy, direct: AsyncClient
) -> None:
    run_id = await _run(direct)
    proxy.plan = [CUT, CUT, CUT]
    async with AsyncClient(proxy.url, slow.stack.dev_token, stream_policy=FAST) as steward:
        seen = [event async for event in steward.runs.events(run_id)]
    await _assert_cut_mid_run(direct, run_id, proxy, 3)
    assert proxy.connections == 4
    first, *resumed = [_last_event_id(head) for head in proxy.heads]
    cursors = [cursor for cursor in resumed if cursor is not None]
    assert (first, len(cursors)) == (None, 3)
    assert 0 < cursors[0] < cursors[1] < cursors[2]  # each reconnect resumed after the last event it had
    stored = await _stored_log(direct, run_id)
    assert seen == stored
    assert [event.seq for event in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].type == "run_completed"
    assert len(seen) > 20  # long enough that three cuts of a few events each fell inside it
    assert "word49" in "".join(event.data["text"] for event in seen if event.type == "text_delta")


async def test_the_blocking_client_resumes_a_cut_stream_the_same_way(
    slow: Slow, proxy: CuttingProxy, direct: AsyncClient
) -> None:
    run_id = await _run(direct)
    proxy.plan = [CUT, CUT, CUT]

    def read() -> list[RunEvent]:
        with Client(proxy.url, slow.stack.dev_token, stream_policy=FAST) as steward:
            return list(steward.runs.events(run_id))

    seen = await asyncio.to_thread(read)
    await _assert_cut_mid_run(direct, run_id, proxy, 3)
    assert seen == await _stored_log(direct, run_id)


async def test_a_503_with_retry_after_is_waited_out_then_the_stream_resumes(
    slow: Slow, proxy: CuttingProxy, direct: AsyncClient
) -> None:
    run_id = await _run(direct)
    proxy.plan = [CUT, canned_problem(503, "DEPENDENCY_UNAVAILABLE", retry_after=1)]
    async with AsyncClient(proxy.url, slow.stack.dev_token, stream_policy=FAST) as steward:
        seen = [event async for event in steward.runs.events(run_id)]
    assert seen == await _stored_log(direct, run_id)
    assert proxy.connections == 3
    assert proxy.connect_times[2] - proxy.connect_times[1] >= 1.0  # Retry-After: 1, not the policy's backoff


async def test_retries_are_bounded_and_the_last_refusal_is_raised(slow: Slow, proxy: CuttingProxy) -> None:
    proxy.plan = [canned_problem(503, "DEPENDENCY_UNAVAILABLE", retry_after=0)] * 5
    policy = StreamPolicy(max_attempts=2, initial_backoff=0.01)
    async with AsyncClient(proxy.url, slow.stack.dev_token, stream_policy=policy) as steward:
        with pytest.raises(UnavailableError) as refused:
            [event async for event in steward.runs.events("any-run")]
    assert (refused.value.status, refused.value.reason, refused.value.retry_after) == (503, "DEPENDENCY_UNAVAILABLE", 0)
    assert proxy.connections == 3  # the first try and two retries


async def test_401_and_404_are_raised_at_once_without_retrying(
    slow: Slow, proxy: CuttingProxy, direct: AsyncClient
) -> None:
    run_id = await _run(direct, "who am I")
    async with AsyncClient(proxy.url, "not-a-token", stream_policy=FAST) as stranger:
        with pytest.raises(AuthenticationError) as unauthenticated:
            [event async for event in stranger.runs.events(run_id)]
    assert (unauthenticated.value.status, unauthenticated.value.reason) == (401, "TOKEN_INVALID")
    async with AsyncClient(proxy.url, slow.stack.dev_token, stream_policy=FAST) as steward:
        with pytest.raises(NotFoundError) as missing:
            [event async for event in steward.runs.events("no-such-run")]
    assert (missing.value.status, missing.value.reason) == (404, "RUN_NOT_FOUND")
    assert proxy.connections == 2  # one each


async def test_a_cursor_older_than_the_retained_log_is_cursor_expired(slow: Slow, direct: AsyncClient) -> None:
    run_id = await _run(direct, "compact me later")
    assert [event async for event in direct.runs.events(run_id)][-1].is_end  # it ended
    # Retention as the store runs it, over this module's own database: every run that ended is compacted.
    engine = create_engine(f"sqlite+aiosqlite:///{(slow.stack.data_dir / 'steward.db').resolve()}")
    try:
        assert await RetentionRepository(create_sessionmaker(engine)).compact(now() + timedelta(seconds=1)) >= 1
    finally:
        await engine.dispose()
    with pytest.raises(CursorExpiredError) as expired:
        [event async for event in direct.runs.events(run_id, after=1)]
    assert (expired.value.status, expired.value.reason) == (410, "CURSOR_EXPIRED")
