"""Pause deadlines on both backends (ADR 0018): a paused run past its deadline ends expired exactly once, with its
run_expired event; a run resumed first, or paused with no deadline or a later one, is left alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from steward.common.v1 import content_pb2
from steward.errors import Reason, from_rpc_error
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.timeutil import now
from tests.store.conftest import Metadata, StoreUnderTest

TTL = Duration(seconds=60)


async def _paused_run(
    store: StoreUnderTest, user: Metadata, reason: run_pb2.PauseReason.ValueType, deadline_in: float | None
) -> run_pb2.Run:
    """A run claimed once and paused for `reason`, its deadline `deadline_in` seconds from now (None: none)."""
    conversation = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation
    message = content_pb2.ChatMessage(
        role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="go"))]
    )
    created = await store.runs.CreateRun(
        pb.CreateRunRequest(conversation_id=conversation.id, input_message=message), metadata=user
    )
    claimed = await store.runs.ClaimRun(
        pb.ClaimRunRequest(id=created.run.id, holder="replica-a", lease_ttl=TTL), metadata=user
    )
    pause = pb.CheckpointRunRequest(
        run_id=created.run.id,
        lease_epoch=claimed.run.lease_epoch,
        events=[ev.RunEvent(run_paused=ev.RunPaused(reason=reason))],
        state=run_pb2.RUN_STATE_PAUSED,
        pause_reason=reason,
    )
    if deadline_in is not None:
        pause.pause_expire_time.FromDatetime(now() + timedelta(seconds=deadline_in))
    return (await store.runs.CheckpointRun(pause, metadata=user)).run


async def _reason(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return from_rpc_error(raised.value).reason


async def test_paused_runs_past_their_deadline_expire_once_across_concurrent_sweeps(store: StoreUnderTest) -> None:
    user = store.user()
    service = store.service("runtime")
    overdue = [
        await _paused_run(store, user, reason, -1.0)
        for reason in [run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL, run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION] * 3
    ]
    later = await _paused_run(store, user, run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL, 3600.0)
    never = await _paused_run(store, user, run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION, None)
    assert later.HasField("pause_expire_time")
    assert not never.HasField("pause_expire_time")

    async def sweeper() -> list[tuple[run_pb2.Run, ev.RunEvent]]:
        ended: list[tuple[run_pb2.Run, ev.RunEvent]] = []
        while True:
            reply = await store.runs.ExpirePausedRuns(pb.ExpirePausedRunsRequest(max_runs=2), metadata=service)
            if not reply.runs:
                return ended
            ended.extend(zip(reply.runs, reply.events, strict=True))

    swept = [pair for ended in await asyncio.gather(sweeper(), sweeper(), sweeper()) for pair in ended]
    expired_ids = [run.id for run, _ in swept]
    assert sorted(expired_ids) == sorted(run.id for run in overdue)  # each exactly once, and only these
    by_id = {run.id: run for run in overdue}
    for run, event in swept:
        assert run.state == run_pb2.RUN_STATE_EXPIRED
        assert run.HasField("end_time")
        assert run.lease_epoch == by_id[run.id].lease_epoch + 1  # a claim or write in flight is fenced
        assert not run.HasField("pause_expire_time")
        assert event.WhichOneof("payload") == "run_expired"
        assert event.run_expired.reason == by_id[run.id].pause_reason
        assert event.run_expired.expire_time == by_id[run.id].pause_expire_time
        assert (event.run_id, event.seq) == (run.id, run.last_event_seq)
        log = [
            item.event
            async for item in store.runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=run.id), metadata=user)
        ]
        assert log[-1] == event
        resume = pb.ClaimRunRequest(id=run.id, holder="replica-b", lease_ttl=TTL)
        assert await _reason(store.runs.ClaimRun(resume, metadata=user)) == Reason.RUN_STATE_CONFLICT
        late = pb.CheckpointRunRequest(run_id=run.id, lease_epoch=by_id[run.id].lease_epoch)
        assert await _reason(store.runs.CheckpointRun(late, metadata=user)) == Reason.LEASE_LOST
    for waiting in (later, never):
        run = (await store.runs.GetRun(pb.GetRunRequest(id=waiting.id), metadata=user)).run
        assert run.state == run_pb2.RUN_STATE_PAUSED


async def test_a_run_resumed_before_the_sweep_goes_on_and_loses_its_deadline(store: StoreUnderTest) -> None:
    user = store.user()
    paused = await _paused_run(store, user, run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL, -1.0)
    resumed = await store.runs.ClaimRun(
        pb.ClaimRunRequest(id=paused.id, holder="replica-b", lease_ttl=TTL), metadata=user
    )
    assert resumed.run.state == run_pb2.RUN_STATE_RUNNING
    assert not resumed.run.HasField("pause_expire_time")
    reply = await store.runs.ExpirePausedRuns(pb.ExpirePausedRunsRequest(max_runs=100), metadata=store.service())
    assert paused.id not in {run.id for run in reply.runs}
    # Paused again, its new pause has the deadline the new checkpoint gives; another state has none.
    again = pb.CheckpointRunRequest(
        run_id=paused.id,
        lease_epoch=resumed.run.lease_epoch,
        state=run_pb2.RUN_STATE_RUNNING,
        pause_expire_time=Timestamp(seconds=1),
    )
    assert not (await store.runs.CheckpointRun(again, metadata=user)).run.HasField("pause_expire_time")


async def test_expiring_runs_is_for_services_only(store: StoreUnderTest) -> None:
    request = pb.ExpirePausedRunsRequest(max_runs=1)
    assert await _reason(store.runs.ExpirePausedRuns(request, metadata=store.user())) == Reason.PERMISSION_DENIED
    request.max_runs = 0
    assert await _reason(store.runs.ExpirePausedRuns(request, metadata=store.service())) == Reason.INVALID_ARGUMENT
