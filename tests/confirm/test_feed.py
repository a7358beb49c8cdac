"""The decision feed: WatchDecisions replays then follows, expiries reach it, the sweep and acknowledgements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from services.confirm.db.database import open_database
from services.confirm.db.feed import FeedRepository
from services.confirm.notifier import FeedNotifier
from services.confirm.server import create_server
from steward import timeutil
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from steward.db import create_engine
from steward.errors import from_rpc_error
from tests.confirm.conftest import Alice, ConfirmUnderTest, FreshConfirm, confirm_settings, refused

BOUND = 10.0  # seconds any expected entry may take to arrive


class Watcher:
    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.WatchDecisionsRequest, pb.WatchDecisionsResponse]) -> None:
        self.call = call

    async def next(self, within: float = BOUND) -> pb.WatchDecisionsResponse:
        async with asyncio.timeout(within):
            item = await self.call.read()
        assert isinstance(item, pb.WatchDecisionsResponse), "the stream ended"
        return item

    async def ids(self, count: int) -> list[str]:
        return [(await self.next()).confirmation.id for _ in range(count)]


@asynccontextmanager
async def watching(confirm: ConfirmUnderTest, after: str) -> AsyncIterator[Watcher]:
    call = confirm.stub.WatchDecisions(pb.WatchDecisionsRequest(after_cursor=after), metadata=confirm.feed())
    try:
        yield Watcher(call)
    finally:
        call.cancel()


async def _approved(confirm: ConfirmUnderTest, who: Alice) -> c.Confirmation:
    created = await confirm.create(who)
    return await confirm.decide(who, created.id, {"outcome": "approve"})


async def test_watch_replays_after_a_cursor_then_follows_live_decisions(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    start = await confirm.head()
    first, second = await _approved(confirm, alice), await _approved(confirm, alice)
    async with watching(confirm, start) as watcher:
        replayed = [await watcher.next(), await watcher.next()]
        assert [item.confirmation.id for item in replayed] == [first.id, second.id]
        assert replayed[0].confirmation == await confirm.get(alice, first.id)
        assert int(replayed[0].cursor) < int(replayed[1].cursor)
        live = await _approved(confirm, alice)
        assert await watcher.ids(1) == [live.id]
    # A watcher resuming after the first entry's cursor gets the rest, in order.
    async with watching(confirm, replayed[0].cursor) as resumed:
        assert await resumed.ids(2) == [second.id, live.id]


async def test_two_watchers_both_see_each_decision(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    start = await confirm.head()
    async with watching(confirm, start) as one, watching(confirm, start) as two:
        decided = [await _approved(confirm, alice) for _ in range(3)]
        expected = [item.id for item in decided]
        assert await one.ids(3) == expected
        assert await two.ids(3) == expected


async def test_an_empty_cursor_starts_with_decisions_made_from_now_on(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    earlier = await _approved(confirm, alice)
    async with watching(confirm, "") as watcher:
        later: list[str] = []
        for _ in range(20):  # the stream reads the head when it starts; decide until it is following
            later.append((await _approved(confirm, alice)).id)
            try:
                first = await watcher.next(within=0.5)
            except TimeoutError:
                continue
            break
        assert first.confirmation.id in later
        assert first.confirmation.id != earlier.id


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 18])
async def test_a_cursor_this_service_did_not_issue_is_refused(confirm: ConfirmUnderTest, cursor: str) -> None:
    call = confirm.stub.WatchDecisions(pb.WatchDecisionsRequest(after_cursor=cursor), metadata=confirm.feed())
    error = await refused(call.read())
    assert (error.code, error.reason, error.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "after_cursor",
    )


async def test_a_cursor_older_than_the_retained_feed_is_expired(fresh_confirm: FreshConfirm) -> None:
    async with fresh_confirm() as confirm:
        alice = confirm.person()
        start = await confirm.head()
        decided = await _approved(confirm, alice)
        after = await confirm.head()
        engine = create_engine(confirm.database_url)
        try:
            trimmed = await FeedRepository(open_database(engine, FeedNotifier())).prune(
                timeutil.now() + timedelta(minutes=1)
            )
        finally:
            await engine.dispose()
        assert trimmed == 1
        call = confirm.stub.WatchDecisions(pb.WatchDecisionsRequest(after_cursor=start), metadata=confirm.feed())
        error = await refused(call.read())
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED")
        # The sweep still finds the decision, and a stream from the trim point onwards is fine.
        swept = await confirm.stub.ListDecidedConfirmations(
            pb.ListDecidedConfirmationsRequest(), metadata=confirm.feed()
        )
        assert [item.id for item in swept.confirmations] == [decided.id]
        async with watching(confirm, after) as watcher:
            live = await _approved(confirm, alice)
            assert await watcher.ids(1) == [live.id]


async def test_the_sweep_expires_overdue_confirmations_onto_the_feed(fresh_confirm: FreshConfirm) -> None:
    async with fresh_confirm(sweep_interval=0.05) as confirm:
        alice = confirm.person()
        created = await confirm.create(alice)
        async with watching(confirm, await confirm.head()) as watcher:
            await confirm.make_overdue(created.id)
            entry = await watcher.next()
        assert entry.confirmation.id == created.id
        assert entry.confirmation.state == c.CONFIRMATION_STATE_EXPIRED
        assert entry.confirmation.decision.surface == c.SURFACE_SYSTEM


async def test_the_sweep_lists_unacknowledged_decisions_oldest_first(fresh_confirm: FreshConfirm) -> None:
    async with fresh_confirm() as confirm:
        alice, bob = confirm.person(), confirm.person()
        a1, a2, a3, b1 = (await confirm.create(alice), await confirm.create(alice), await confirm.create(alice),
                          await confirm.create(bob))  # fmt: skip
        await confirm.decide(alice, a2.id, {"outcome": "approve"})
        await confirm.decide(alice, a1.id, {"outcome": "reject"})
        await confirm.decide(bob, b1.id, {"outcome": "approve"})
        await confirm.make_overdue(a3.id)  # expired by the sweep call itself
        seen: list[str] = []
        token = ""
        while True:
            page = await confirm.stub.ListDecidedConfirmations(
                pb.ListDecidedConfirmationsRequest(page_size=1, page_token=token), metadata=confirm.feed()
            )
            seen += [item.id for item in page.confirmations]
            if len(seen) == 1:  # acknowledging while paging does not shift the later pages
                ack = pb.AcknowledgeDecisionRequest(confirmation_id=a2.id, lease_epoch=1)
                await confirm.stub.AcknowledgeDecision(ack, metadata=alice.runtime)
            if not (token := page.next_page_token):
                break
        assert seen == [a2.id, a1.id, b1.id, a3.id]
        again = await confirm.stub.ListDecidedConfirmations(
            pb.ListDecidedConfirmationsRequest(), metadata=confirm.feed()
        )
        assert [item.id for item in again.confirmations] == [a1.id, b1.id, a3.id]


async def test_acknowledging_is_idempotent_fenced_and_only_for_decisions(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    decided, pending = await _approved(confirm, alice), await confirm.create(alice)

    def ack(confirmation_id: str, epoch: int) -> pb.AcknowledgeDecisionRequest:
        return pb.AcknowledgeDecisionRequest(confirmation_id=confirmation_id, lease_epoch=epoch)

    first = (await confirm.stub.AcknowledgeDecision(ack(decided.id, 2), metadata=alice.runtime)).confirmation
    assert first.HasField("acknowledge_time")
    again = (await confirm.stub.AcknowledgeDecision(ack(decided.id, 2), metadata=alice.runtime)).confirmation
    assert again == first
    stale = await refused(confirm.stub.AcknowledgeDecision(ack(decided.id, 1), metadata=alice.runtime))
    assert (stale.code, stale.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_LOST")
    undecided = await refused(confirm.stub.AcknowledgeDecision(ack(pending.id, 2), metadata=alice.runtime))
    assert (undecided.code, undecided.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_STATE_CONFLICT")
    assert not (await confirm.get(alice, pending.id)).HasField("acknowledge_time")


async def test_stopping_the_server_ends_open_streams_with_shutting_down(fresh_confirm: FreshConfirm) -> None:
    async with fresh_confirm() as confirm:
        alice = confirm.person()
        async with watching(confirm, await confirm.head()) as watcher:
            decided = await _approved(confirm, alice)
            assert await watcher.ids(1) == [decided.id]  # the stream is open and following
            await confirm.server.stop(5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await watcher.next()
        error = from_rpc_error(raised.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")


async def test_decisions_wake_streams_at_once_here_and_on_other_replicas(
    fresh_confirm: FreshConfirm, tmp_path: Path
) -> None:
    """With a 60 s re-read, only a wake-up can deliver within the bound: in-process on this replica, and
    LISTEN/NOTIFY from another replica on Postgres (SQLite has one replica, so that half is Postgres only)."""
    async with fresh_confirm(live_poll_seconds=60) as confirm:
        alice = confirm.person()
        async with watching(confirm, await confirm.head()) as watcher:
            here = await _approved(confirm, alice)
            assert await watcher.ids(1) == [here.id]
            if confirm.backend != "postgres":
                return
            settings = confirm_settings(confirm.database_url, confirm.secret, tmp_path, live_poll_seconds=60)
            other = await create_server(settings, "127.0.0.1:0")
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
                    replica = ConfirmUnderTest(confirm.backend, confirm.database_url, confirm.secret, other, channel)
                    there = await _approved(replica, alice)
                    assert await watcher.ids(1) == [there.id]
            finally:
                await other.stop(0.5)
