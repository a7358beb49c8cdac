"""The store over real gRPC: per-user scoping, lease fencing, and live event streams."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest


def _text(text: str) -> content_pb2.ChatMessage:
    return content_pb2.ChatMessage(
        role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))]
    )


async def _run(store: StoreUnderTest, user: Metadata) -> tuple[str, str]:
    conversation = (
        await store.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)
    ).conversation
    created = await store.runs.CreateRun(
        pb.CreateRunRequest(conversation_id=conversation.id, input_message=_text("hi")), metadata=user
    )
    return conversation.id, created.run.id


async def _expect(reason: str, call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert from_rpc_error(raised.value).reason == reason


async def test_another_users_resources_are_not_found(store: StoreUnderTest) -> None:
    alice, bob = store.user(), store.user()
    conversation_id, run_id = await _run(store, alice)
    conversations, runs = store.conversations, store.runs
    ttl = Duration(seconds=30)
    await _expect(
        "CONVERSATION_NOT_FOUND",
        conversations.GetConversation(pb.GetConversationRequest(id=conversation_id), metadata=bob),
    )
    await _expect(
        "CONVERSATION_NOT_FOUND",
        conversations.ListMessages(pb.ListMessagesRequest(conversation_id=conversation_id), metadata=bob),
    )
    await _expect(
        "CONVERSATION_NOT_FOUND",
        conversations.AppendMessage(
            pb.AppendMessageRequest(conversation_id=conversation_id, message=_text("x")), metadata=bob
        ),
    )
    await _expect(
        "CONVERSATION_NOT_FOUND",
        conversations.DeleteConversation(pb.DeleteConversationRequest(id=conversation_id), metadata=bob),
    )
    await _expect(
        "CONVERSATION_NOT_FOUND", runs.CreateRun(pb.CreateRunRequest(conversation_id=conversation_id), metadata=bob)
    )
    await _expect("RUN_NOT_FOUND", runs.GetRun(pb.GetRunRequest(id=run_id), metadata=bob))
    await _expect(
        "RUN_NOT_FOUND", runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="b", lease_ttl=ttl), metadata=bob)
    )
    await _expect(
        "RUN_NOT_FOUND",
        runs.AppendRunEvents(
            pb.AppendRunEventsRequest(run_id=run_id, events=[ev.RunEvent(run_resumed=ev.RunResumed())]), metadata=bob
        ),
    )
    await _expect("RUN_NOT_FOUND", runs.CheckpointRun(pb.CheckpointRunRequest(run_id=run_id), metadata=bob))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=run_id), metadata=bob):
            pass
    assert from_rpc_error(raised.value).reason == "RUN_NOT_FOUND"
    assert not (await conversations.ListConversations(pb.ListConversationsRequest(), metadata=bob)).conversations
    assert not (await runs.ListRuns(pb.ListRunsRequest(), metadata=bob)).runs
    # Alice still sees everything, unchanged.
    messages = (
        await conversations.ListMessages(pb.ListMessagesRequest(conversation_id=conversation_id), metadata=alice)
    ).messages
    assert [m.content[0].text.text for m in messages] == ["hi"]
    assert (await runs.GetRun(pb.GetRunRequest(id=run_id), metadata=alice)).run.state == run_pb2.RUN_STATE_QUEUED


async def test_a_stale_lease_epoch_is_refused_and_changes_nothing(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id = await _run(store, user)
    runs = store.runs
    ttl = Duration(seconds=30)
    first = (await runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=ttl), metadata=user)).run
    assert first.lease_epoch == 1
    assert first.state == run_pb2.RUN_STATE_RUNNING
    await _expect(
        "RUN_STATE_CONFLICT", runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="b", lease_ttl=ttl), metadata=user)
    )
    await runs.CheckpointRun(
        pb.CheckpointRunRequest(
            run_id=run_id,
            lease_epoch=1,
            state=run_pb2.RUN_STATE_PAUSED,
            pause_reason=run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION,
            events=[ev.RunEvent(run_paused=ev.RunPaused(reason=run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION))],
        ),
        metadata=user,
    )
    second = (await runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="b", lease_ttl=ttl), metadata=user)).run
    assert second.lease_epoch == 2
    stale_event = [ev.RunEvent(text_delta=ev.TextDelta(text="from the past"))]
    await _expect(
        "LEASE_LOST",
        runs.AppendRunEvents(
            pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=1, events=stale_event), metadata=user
        ),
    )
    await _expect(
        "LEASE_LOST",
        runs.CheckpointRun(
            pb.CheckpointRunRequest(
                run_id=run_id, lease_epoch=1, messages=[_text("x")], state=run_pb2.RUN_STATE_COMPLETED
            ),
            metadata=user,
        ),
    )
    after = (await runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run
    assert after.last_event_seq == 1
    assert after.state == run_pb2.RUN_STATE_RUNNING
    assert after.lease_epoch == 2


async def test_a_live_subscriber_sees_every_event_exactly_once(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id = await _run(store, user)
    runs = store.runs
    epoch = (
        await runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=Duration(seconds=30)), metadata=user)
    ).run.lease_epoch
    await runs.AppendRunEvents(
        pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=[ev.RunEvent(run_started=ev.RunStarted())]),
        metadata=user,
    )
    seen: list[int] = []

    async def subscribe() -> None:
        async for item in runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=run_id, follow=True), metadata=user):
            seen.append(item.event.seq)

    subscriber = asyncio.create_task(subscribe())
    batches = [
        [ev.RunEvent(step=1, text_delta=ev.TextDelta(text=f"{i}-{j}")) for j in range(i % 3 + 1)] for i in range(40)
    ]
    await asyncio.gather(
        *(
            runs.AppendRunEvents(pb.AppendRunEventsRequest(run_id=run_id, lease_epoch=epoch, events=b), metadata=user)
            for b in batches
        )
    )
    done = await runs.CheckpointRun(
        pb.CheckpointRunRequest(
            run_id=run_id,
            lease_epoch=epoch,
            state=run_pb2.RUN_STATE_COMPLETED,
            events=[ev.RunEvent(run_completed=ev.RunCompleted())],
        ),
        metadata=user,
    )
    await asyncio.wait_for(subscriber, 10)
    total = 1 + sum(len(b) for b in batches) + 1
    assert done.last_event_seq == total
    assert seen == list(range(1, total + 1))


async def test_duplicate_create_with_a_request_id_returns_the_first_run(store: StoreUnderTest) -> None:
    user = store.user()
    conversations, runs = store.conversations, store.runs
    conversation = (await conversations.CreateConversation(pb.CreateConversationRequest(), metadata=user)).conversation
    request = pb.CreateRunRequest(conversation_id=conversation.id, request_id="key-1", input_message=_text("once"))
    first = await runs.CreateRun(request, metadata=user)
    second = await runs.CreateRun(request, metadata=user)
    assert not first.existed
    assert second.existed
    assert first.run.id == second.run.id
    assert second.input_message.id == first.input_message.id
    messages = (
        await conversations.ListMessages(pb.ListMessagesRequest(conversation_id=conversation.id), metadata=user)
    ).messages
    assert len(messages) == 1


async def test_message_ids_minted_by_the_caller_are_used_once(store: StoreUnderTest) -> None:
    user = store.user()
    conversation_id, run_id = await _run(store, user)
    runs = store.runs
    claim = pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=Duration(seconds=30))
    epoch = (await runs.ClaimRun(claim, metadata=user)).run.lease_epoch
    minted = str(uuid.uuid4())
    done = await runs.CheckpointRun(
        pb.CheckpointRunRequest(
            run_id=run_id,
            lease_epoch=epoch,
            messages=[_text("answer")],
            message_ids=[minted],
            events=[ev.RunEvent(run_completed=ev.RunCompleted(message_id=minted))],
            state=run_pb2.RUN_STATE_COMPLETED,
        ),
        metadata=user,
    )
    assert [m.id for m in done.messages] == [minted]
    listed = await store.conversations.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation_id), metadata=user
    )
    assert [m.id for m in listed.messages][-1] == minted
    events = [
        item.event async for item in runs.StreamRunEvents(pb.StreamRunEventsRequest(run_id=run_id), metadata=user)
    ]
    assert events[-1].run_completed.message_id == minted


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        (["not-a-uuid"], "INVALID_ARGUMENT"),
        ([str(uuid.uuid4()).upper()], "INVALID_ARGUMENT"),  # events carry ids verbatim: one spelling only
        ([str(uuid.uuid4()), str(uuid.uuid4())], "INVALID_ARGUMENT"),  # two ids for one message
        (None, "MESSAGE_ID_CONFLICT"),  # the id of a message that exists
    ],
)
async def test_bad_or_taken_message_ids_are_refused_and_change_nothing(
    store: StoreUnderTest, ids: list[str] | None, reason: str
) -> None:
    user = store.user()
    conversation_id, run_id = await _run(store, user)
    runs, conversations = store.runs, store.conversations
    claim = pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=Duration(seconds=30))
    epoch = (await runs.ClaimRun(claim, metadata=user)).run.lease_epoch
    listing = pb.ListMessagesRequest(conversation_id=conversation_id)
    before = (await conversations.ListMessages(listing, metadata=user)).messages
    request = pb.CheckpointRunRequest(
        run_id=run_id,
        lease_epoch=epoch,
        messages=[_text("answer")],
        message_ids=ids if ids is not None else [before[0].id],
        events=[ev.RunEvent(usage=ev.UsageReported())],
        step_count=1,
    )
    await _expect(reason, runs.CheckpointRun(request, metadata=user))
    assert (await conversations.ListMessages(listing, metadata=user)).messages == before
    run = (await runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run
    assert (run.last_event_seq, run.step_count, run.state) == (0, 0, run_pb2.RUN_STATE_RUNNING)


async def test_a_checkpoint_sets_the_runs_stop_reason_and_one_without_keeps_it(store: StoreUnderTest) -> None:
    user = store.user()
    _, run_id = await _run(store, user)
    runs = store.runs
    claim = pb.ClaimRunRequest(id=run_id, holder="a", lease_ttl=Duration(seconds=30))
    epoch = (await runs.ClaimRun(claim, metadata=user)).run.lease_epoch
    assert (await runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run.stop_reason == 0
    step = pb.CheckpointRunRequest(
        run_id=run_id, lease_epoch=epoch, step_count=1, stop_reason=run_pb2.STOP_REASON_MAX_TOKENS
    )
    assert (await runs.CheckpointRun(step, metadata=user)).run.stop_reason == run_pb2.STOP_REASON_MAX_TOKENS
    end = pb.CheckpointRunRequest(
        run_id=run_id,
        lease_epoch=epoch,
        state=run_pb2.RUN_STATE_INCOMPLETE,
        incomplete_reason=run_pb2.INCOMPLETE_REASON_MAX_TOKENS,
        events=[ev.RunEvent(run_incomplete=ev.RunIncomplete(reason=run_pb2.INCOMPLETE_REASON_MAX_TOKENS))],
    )
    await runs.CheckpointRun(end, metadata=user)
    run = (await runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run
    assert (run.state, run.stop_reason) == (run_pb2.RUN_STATE_INCOMPLETE, run_pb2.STOP_REASON_MAX_TOKENS)
    unknown = pb.CheckpointRunRequest(run_id=run_id, lease_epoch=epoch, stop_reason=99)  # type: ignore[arg-type]
    await _expect("INVALID_ARGUMENT", runs.CheckpointRun(unknown, metadata=user))
