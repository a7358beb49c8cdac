"""The run event log on both backends: gap-free seqs, live following, idempotent writes, retention."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from services.store.db.retention import RetentionRepository
from services.store.server import create_server
from steward import timeutil
from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.store.conftest import Metadata, StoreUnderTest, direct_sessions, store_settings

TTL = Duration(seconds=60)


def _text(text: str, role: content_pb2.Role.ValueType = content_pb2.ROLE_USER) -> content_pb2.ChatMessage:
    return content_pb2.ChatMessage(role=role, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))])


def _delta(text: str) -> ev.RunEvent:
    return ev.RunEvent(step=1, text_delta=ev.TextDelta(text=text))


async def _claimed(store: StoreUnderTest, user: Metadata) -> tuple[str, str, int]:
    conversation = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation
    run = (await store.runs.CreateRun(pb.CreateRunRequest(conversation_id=conversation.id), metadata=user)).run
    claimed = await store.runs.ClaimRun(pb.ClaimRunRequest(id=run.id, holder="t", lease_ttl=TTL), metadata=user)
    return conversation.id, run.id, claimed.run.lease_epoch


async def _log(store: StoreUnderTest, user: Metadata, run_id: str, after: int = 0) -> list[ev.RunEvent]:
    request = pb.StreamRunEventsRequest(run_id=run_id, after_seq=after)
    return [item.event async for item in store.runs.StreamRunEvents(request, metadata=user)]


async def test_fifty_concurrent_appends_get_seqs_one_to_fifty(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id, epoch = await _claimed(store, user)
    replies = await asyncio.gather(
        *(
            store.runs.AppendRunEvents(
                pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[_delta(str(i))]), metadata=user
            )
            for i in range(50)
        )
    )
    assert sorted(r.first_seq for r in replies) == list(range(1, 51))
    events = await _log(store, user, run_id)
    assert [e.seq for e in events] == list(range(1, 51))
    assert sorted(int(e.text_delta.text) for e in events) == list(range(50))


async def test_a_subscriber_attached_mid_stream_sees_every_event_once(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id, epoch = await _claimed(store, user)

    async def append(count: int) -> None:
        for i in range(count):
            events = [_delta(f"{i}-{j}") for j in range(i % 3 + 1)]
            await store.runs.AppendRunEvents(
                pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=events), metadata=user
            )

    await append(10)
    seen: list[int] = []
    attached = asyncio.Event()

    async def follow() -> None:
        request = pb.StreamRunEventsRequest(run_id=run_id, after_seq=0, follow=True)
        async for item in store.runs.StreamRunEvents(request, metadata=user):
            seen.append(item.event.seq)
            attached.set()

    subscriber = asyncio.create_task(follow())
    await asyncio.wait_for(attached.wait(), 10)
    await append(30)
    done = await store.runs.CheckpointRun(
        pb.CheckpointRunRequest(
            run_id=run_id,
            lease_epoch=epoch,
            state=run_pb2.RUN_STATE_COMPLETED,
            events=[ev.RunEvent(run_completed=ev.RunCompleted())],
        ),
        metadata=user,
    )
    await asyncio.wait_for(subscriber, 10)
    assert seen == list(range(1, done.last_event_seq + 1))


async def test_retried_writes_with_a_request_id_change_nothing(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id, run_id, epoch = await _claimed(store, user)
    append = pb.AppendRunEventsRequest(
        run_id=run_id, lease_epoch=epoch, events=[_delta("a"), _delta("b")], request_id="k1"
    )
    first = await store.runs.AppendRunEvents(append, metadata=user)
    retry = await store.runs.AppendRunEvents(append, metadata=user)
    assert (retry.first_seq, retry.last_seq) == (first.first_seq, first.last_seq) == (1, 2)
    assert (first.replayed, retry.replayed) == (False, True)  # the caller can tell the retry appended nothing
    checkpoint = pb.CheckpointRunRequest(
        run_id=run_id,
        lease_epoch=epoch,
        messages=[_text("answer", content_pb2.ROLE_ASSISTANT)],
        events=[ev.RunEvent(step=1, usage=ev.UsageReported())],
        step_count=1,
        request_id="k2",
    )
    once = await store.runs.CheckpointRun(checkpoint, metadata=user)
    twice = await store.runs.CheckpointRun(checkpoint, metadata=user)
    assert [m.id for m in twice.messages] == [m.id for m in once.messages]
    assert twice.last_event_seq == once.last_event_seq == 3
    # A retry that comes after later writes still gets its own seq back, not the log's end.
    later = pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[_delta("c")], request_id="k3")
    assert (await store.runs.AppendRunEvents(later, metadata=user)).last_seq == 4
    assert (await store.runs.CheckpointRun(checkpoint, metadata=user)).last_event_seq == 3
    messages = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation_id), metadata=user
    )
    assert [m.content[0].text.text for m in messages.messages] == ["answer"]
    assert len(await _log(store, user, run_id)) == 4


async def test_a_checkpoint_carries_the_runs_running_time_which_never_goes_back(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id, epoch = await _claimed(store, user)

    async def checkpoint(key: str, running: Duration | None) -> run_pb2.Run:
        request = pb.CheckpointRunRequest(run_id=run_id, lease_epoch=epoch, events=[_delta(key)], request_id=key)
        if running is not None:
            request.running_time.CopyFrom(running)
        return (await store.runs.CheckpointRun(request, metadata=user)).run

    assert (await checkpoint("r1", Duration(seconds=1, nanos=250_000_000))).running_time.ToMilliseconds() == 1250
    assert (await checkpoint("r2", None)).running_time.ToMilliseconds() == 1250  # unset: left as it is
    assert (await checkpoint("r3", Duration(seconds=1))).running_time.ToMilliseconds() == 1250  # never back
    got = await store.runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)
    assert got.run.running_time.ToMilliseconds() == 1250
    for key, bad in (("r4", Duration(seconds=-1)), ("r5", Duration(seconds=10**9 + 1))):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await checkpoint(key, bad)
        assert from_rpc_error(raised.value).reason == "INVALID_ARGUMENT"
    assert (await store.runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run.last_event_seq == 3


async def test_nul_is_refused_in_text_columns_and_round_trips_in_content(store: StoreUnderTest) -> None:
    user = store.user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await store.conversations.CreateConversation(pb.CreateConversationRequest(title="a\x00b"), metadata=user)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(raised.value).metadata == {"field": "title"}
    conversation_id, run_id, epoch = await _claimed(store, user)
    odd = "nul:\x00 emoji:\U0001f600 rtl:\u202e end"
    stored = await store.conversations.AppendMessage(
        pb.AppendMessageRequest(conversation_id=conversation_id, message=_text(odd)), metadata=user
    )
    assert stored.message.content[0].text.text == odd
    listed = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation_id), metadata=user
    )
    assert listed.messages[0].content[0].text.text == odd
    await store.runs.AppendRunEvents(
        pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[_delta(odd)]), metadata=user
    )
    assert (await _log(store, user, run_id))[0].text_delta.text == odd


async def test_retention_compacts_deltas_and_expires_older_cursors(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id, run_id, epoch = await _claimed(store, user)
    await store.runs.AppendRunEvents(
        pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[ev.RunEvent(run_started=ev.RunStarted())]),
        metadata=user,
    )
    await store.runs.AppendRunEvents(
        pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[_delta("hel"), _delta("lo")]), metadata=user
    )
    await store.runs.CheckpointRun(
        pb.CheckpointRunRequest(
            run_id=run_id,
            lease_epoch=epoch,
            messages=[_text("hello", content_pb2.ROLE_ASSISTANT)],
            events=[ev.RunEvent(run_completed=ev.RunCompleted())],
            state=run_pb2.RUN_STATE_COMPLETED,
        ),
        metadata=user,
    )
    async with direct_sessions(store) as sessions:
        retention = RetentionRepository(sessions)
        assert await retention.compact(timeutil.now() - timedelta(days=1)) == 0  # ended too recently
        assert await retention.compact(timeutil.now() + timedelta(seconds=1)) >= 1
    run = (await store.runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run
    assert run.compacted_through_seq == 3
    for cursor in (0, 2):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _log(store, user, run_id, after=cursor)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert from_rpc_error(raised.value).reason == "CURSOR_EXPIRED"
    rest = await _log(store, user, run_id, after=3)
    assert [(e.seq, e.WhichOneof("payload")) for e in rest] == [(4, "run_completed")]
    messages = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation_id), metadata=user
    )
    assert [m.content[0].text.text for m in messages.messages] == ["hello"]


async def test_a_second_replica_wakes_its_readers_through_postgres(store: StoreUnderTest, tmp_path: Path) -> None:
    if store.backend != "postgres":
        pytest.skip("cross-replica wake-ups are Postgres LISTEN/NOTIFY; SQLite has one store process")
    # This replica never re-reads on its own: only a NOTIFY can wake its reader.
    replica = await create_server(
        store_settings(store.database_url, store.secret, tmp_path, live_poll_seconds=3600), "127.0.0.1:0"
    )
    try:
        user = store.user()
        _, run_id, epoch = await _claimed(store, user)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            other = pb_grpc.RunServiceStub(channel)
            received: asyncio.Queue[int] = asyncio.Queue()

            async def follow() -> None:
                request = pb.StreamRunEventsRequest(run_id=run_id, follow=True)
                async for item in other.StreamRunEvents(request, metadata=user):
                    received.put_nowait(item.event.seq)

            reader = asyncio.create_task(follow())
            for expected in (1, 2, 3):
                await store.runs.AppendRunEvents(
                    pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[_delta("x")]), metadata=user
                )
                assert await asyncio.wait_for(received.get(), 10) == expected
            reader.cancel()
    finally:
        await replica.stop(0.5)
