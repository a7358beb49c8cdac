"""Run leases on both backends: exclusive claims, expiry, fencing, release, cancel."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import update

from services.store.db.models import RunRow
from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.timeutil import now
from tests.store.conftest import Metadata, StoreUnderTest, direct_sessions

TTL = Duration(seconds=60)


async def _queued_run(store: StoreUnderTest, user: Metadata) -> str:
    conversation = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation
    message = content_pb2.ChatMessage(
        role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="go"))]
    )
    created = await store.runs.CreateRun(
        pb.CreateRunRequest(conversation_id=conversation.id, input_message=message), metadata=user
    )
    return created.run.id


async def _reason(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return from_rpc_error(raised.value).reason


async def test_two_claimers_never_both_own_a_run(store: StoreUnderTest) -> None:
    users = [store.user() for _ in range(4)]
    mine = {await _queued_run(store, users[i % 4]) for i in range(24)}
    service = store.service("runtime")

    async def claimer(name: str) -> list[str]:
        claimed: list[str] = []
        while True:
            reply = await store.runs.ClaimRuns(
                pb.ClaimRunsRequest(holder=name, max_runs=3, lease_ttl=TTL), metadata=service
            )
            if not reply.runs:
                return claimed
            assert all(run.lease_epoch >= 1 and run.state == run_pb2.RUN_STATE_RUNNING for run in reply.runs)
            claimed.extend(run.id for run in reply.runs)

    first, second = await asyncio.gather(claimer("replica-a"), claimer("replica-b"))
    assert not set(first) & set(second)
    assert len(first) == len(set(first))
    assert len(second) == len(set(second))
    assert mine <= set(first) | set(second)


async def test_concurrent_claims_of_one_run_have_one_winner(store: StoreUnderTest) -> None:
    user = store.user()
    run_id = await _queued_run(store, user)
    results = await asyncio.gather(
        *(
            store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder=f"h{i}", lease_ttl=TTL), metadata=user)
            for i in range(8)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [from_rpc_error(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert losers == ["RUN_STATE_CONFLICT"] * 7


async def test_claim_runs_is_for_services_only(store: StoreUnderTest) -> None:
    request = pb.ClaimRunsRequest(holder="x", max_runs=1, lease_ttl=TTL)
    assert await _reason(store.runs.ClaimRuns(request, metadata=store.user())) == "PERMISSION_DENIED"


async def test_an_expired_lease_is_claimable_and_its_old_holder_is_fenced(store: StoreUnderTest) -> None:
    user = store.user()
    run_id = await _queued_run(store, user)
    old = (await store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="old", lease_ttl=TTL), metadata=user)).run
    async with direct_sessions(store) as sessions, sessions() as session, session.begin():  # the lease runs out
        await session.execute(
            update(RunRow).where(RunRow.id == run_id).values(lease_expire_time=now() - timedelta(seconds=1))
        )
    new = (await store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="new", lease_ttl=TTL), metadata=user)).run
    assert new.lease_epoch == old.lease_epoch + 1
    event = [ev.RunEvent(text_delta=ev.TextDelta(text="late"))]
    stale = pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=old.lease_epoch, events=event)
    assert await _reason(store.runs.AppendRunEvents(stale, metadata=user)) == "LEASE_LOST"
    beat = pb.HeartbeatRunRequest(id=run_id, lease_epoch=old.lease_epoch, lease_ttl=TTL)
    assert await _reason(store.runs.HeartbeatRun(beat, metadata=user)) == "LEASE_LOST"
    fresh = pb.HeartbeatRunRequest(id=run_id, lease_epoch=new.lease_epoch, lease_ttl=TTL)
    assert (await store.runs.HeartbeatRun(fresh, metadata=user)).lease_expire_time.ToDatetime() > now().replace(
        tzinfo=None
    )
    assert (await store.runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run.last_event_seq == 0


async def test_a_released_run_is_claimable_at_once(store: StoreUnderTest) -> None:
    user = store.user()
    run_id = await _queued_run(store, user)
    held = (await store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=TTL), metadata=user)).run
    busy = pb.ClaimRunRequest(id=run_id, holder="b", lease_ttl=TTL)
    assert await _reason(store.runs.ClaimRun(busy, metadata=user)) == "RUN_STATE_CONFLICT"
    released = await store.runs.ReleaseRun(pb.ReleaseRunRequest(id=run_id, lease_epoch=held.lease_epoch), metadata=user)
    assert released.run.state == run_pb2.RUN_STATE_RUNNING
    taken = (await store.runs.ClaimRun(busy, metadata=user)).run
    assert taken.lease_epoch == held.lease_epoch + 1
    beat = pb.HeartbeatRunRequest(id=run_id, lease_epoch=held.lease_epoch, lease_ttl=TTL)
    assert await _reason(store.runs.HeartbeatRun(beat, metadata=user)) == "LEASE_LOST"


async def test_cancel_ends_a_queued_run_and_flags_a_running_one(store: StoreUnderTest) -> None:
    user = store.user()
    queued = await _queued_run(store, user)
    cancelled = (await store.runs.RequestRunCancel(pb.RequestRunCancelRequest(id=queued), metadata=user)).run
    assert cancelled.state == run_pb2.RUN_STATE_CANCELLED
    assert cancelled.end_time.seconds > 0
    claim = pb.ClaimRunRequest(id=queued, holder="late", lease_ttl=TTL)
    assert await _reason(store.runs.ClaimRun(claim, metadata=user)) == "RUN_STATE_CONFLICT"
    events = [
        e.event async for e in store.runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=queued), metadata=user)
    ]
    assert [e.WhichOneof("payload") for e in events] == ["run_cancelled"]
    again = (await store.runs.RequestRunCancel(pb.RequestRunCancelRequest(id=queued), metadata=user)).run
    assert again.last_event_seq == 1  # idempotent: nothing more appended

    running = await _queued_run(store, user)
    held = (await store.runs.ClaimRun(pb.ClaimRunRequest(id=running, holder="a", lease_ttl=TTL), metadata=user)).run
    flagged = (await store.runs.RequestRunCancel(pb.RequestRunCancelRequest(id=running), metadata=user)).run
    assert flagged.state == run_pb2.RUN_STATE_RUNNING
    assert flagged.cancel_requested
    beat = pb.HeartbeatRunRequest(id=running, lease_epoch=held.lease_epoch, lease_ttl=TTL)
    assert (await store.runs.HeartbeatRun(beat, metadata=user)).cancel_requested
