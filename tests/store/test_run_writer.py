"""The runtime's EventWriter against the real store (both backends): writes made without waiting reach the log in
the order they were made, merged when they queue up; a failed write fails every later one; nothing is lost."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from services.runtime.run.writer import EventWriter
from steward.auth import Principal, TokenSigner, reset_principal, set_principal
from steward.common.v1 import content_pb2
from steward.errors import StewardError
from steward.rpc.channels import create_channel
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from tests.store.conftest import StoreUnderTest


class Claimed:
    """A claimed run of a fresh user, and a runtime-style channel that acts for that user."""

    def __init__(self, store: StoreUnderTest, channel: grpc.aio.Channel, user: str, run: run_pb2.Run) -> None:
        self.store, self.channel, self.user, self.run = store, channel, user, run
        self.runs = pb_grpc.RunServiceStub(channel)
        self.tapped: list[ev.RunEvent] = []

    def writer(self, interval: float = 60.0) -> EventWriter:
        async def tap(event: ev.RunEvent) -> None:
            copy = ev.RunEvent()
            copy.CopyFrom(event)
            self.tapped.append(copy)

        return EventWriter(self.runs, self.run.id, self.run.lease_epoch, interval, tap=tap)

    async def log(self) -> list[ev.RunEvent]:
        request = pb.StreamRunEventsRequest(run_id=self.run.id)
        return [item.event async for item in self.runs.StreamRunEvents(request)]

    async def messages(self) -> list[str]:
        """The conversation's texts, read a message at a time (a page of large ones would pass gRPC's limit)."""
        texts: list[str] = []
        token = ""
        while True:
            listing = pb.ListMessagesRequest(conversation_id=self.run.conversation_id, page_size=1, page_token=token)
            page = await pb_grpc.ConversationServiceStub(self.channel).ListMessages(listing)
            texts += [block.text.text for message in page.messages for block in message.content]
            if not (token := page.next_page_token):
                return texts


@contextlib.contextmanager
def acting_for(user: str) -> Iterator[None]:
    """Make `user` the current principal: the runtime-style channel signs it into every call."""
    token = set_principal(Principal(user))
    try:
        yield
    finally:
        reset_principal(token)


@pytest.fixture
async def claimed(store: StoreUnderTest) -> AsyncIterator[Claimed]:
    user = f"writer-{uuid.uuid4().hex}"
    channel = create_channel(
        f"127.0.0.1:{store.server.port}", "store", signer=TokenSigner(store.secret, issuer="runtime"), actor="runtime"
    )
    try:
        with acting_for(user):
            conversations = pb_grpc.ConversationServiceStub(channel)
            conversation = (await conversations.CreateConversation(pb.CreateConversationRequest())).conversation
            runs = pb_grpc.RunServiceStub(channel)
            run = (await runs.CreateRun(pb.CreateRunRequest(conversation_id=conversation.id))).run
            claim = pb.ClaimRunRequest(id=run.id, holder="writer-test", lease_ttl=Duration(seconds=60))
            claimed = Claimed(store, channel, user, (await runs.ClaimRun(claim)).run)
        yield claimed
    finally:
        await channel.close()


def _text(text: str) -> content_pb2.ChatMessage:
    block = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))
    return content_pb2.ChatMessage(role=content_pb2.ROLE_ASSISTANT, content=[block])


def _payloads(events: list[ev.RunEvent]) -> list[str]:
    out = []
    for event in events:
        kind = event.WhichOneof("payload")
        out.append(f"{kind}:{event.text_delta.text}" if kind == "text_delta" else str(kind))
    return out


async def test_writes_not_waited_for_land_in_order_and_merged(claimed: Claimed) -> None:
    with acting_for(claimed.user):
        writer = claimed.writer()
        writer.later(ev.RunEvent(run_started=ev.RunStarted()))
        writer.send(ev.RunEvent(step=1, step_started=ev.StepStarted()))  # in flight while the rest queues behind it
        writer.text(1, "a")  # the first delta: a write of its own
        writer.text(1, "b")
        writer.text(1, "c")  # merged into one delta, buffered
        first = writer.checkpoint_soon(
            pb.CheckpointRunRequest(messages=[_text("step 1")], events=[ev.RunEvent(step=1, usage=ev.UsageReported())])
        )
        writer.send(ev.RunEvent(step=2, step_started=ev.StepStarted()))
        writer.text(2, "d")
        end = pb.CheckpointRunRequest(
            messages=[_text("step 2")],
            events=[ev.RunEvent(run_completed=ev.RunCompleted())],
            state=run_pb2.RUN_STATE_COMPLETED,
            step_count=2,
        )
        await writer.checkpoint(end)
        assert first.done()
        expected = [
            "run_started",
            "step_started",
            "text_delta:a",
            "text_delta:bc",
            "usage",
            "step_started",
            "text_delta:d",
            "run_completed",
        ]
        log = await claimed.log()
        assert _payloads(log) == expected
        assert [event.seq for event in log] == list(range(1, len(expected) + 1))  # gap-free
        assert await claimed.messages() == ["step 1", "step 2"]
        # The tap saw every event once it was durable, with the seq the log gave it.
        assert [(e.seq, _payloads([e])[0]) for e in claimed.tapped] == [(e.seq, _payloads([e])[0]) for e in log]
        run = (await claimed.runs.GetRun(pb.GetRunRequest(id=claimed.run.id))).run
        assert (run.state, run.step_count) == (run_pb2.RUN_STATE_COMPLETED, 2)


async def test_a_failed_write_fails_every_later_one_and_abandon_keeps_the_buffer(claimed: Claimed) -> None:
    with acting_for(claimed.user):
        writer = claimed.writer()
        await writer.emit(ev.RunEvent(run_started=ev.RunStarted()))
        # Another holder claims the run (its lease is released first): this writer's epoch is now stale.
        await claimed.runs.ReleaseRun(pb.ReleaseRunRequest(id=claimed.run.id, lease_epoch=claimed.run.lease_epoch))
        claim = pb.ClaimRunRequest(id=claimed.run.id, holder="other", lease_ttl=Duration(seconds=60))
        await claimed.runs.ClaimRun(claim)
        lost = writer.checkpoint_soon(pb.CheckpointRunRequest(messages=[_text("stale")]))
        with pytest.raises(StewardError) as raised:
            await writer.settle()
        assert raised.value.reason == "LEASE_LOST"
        with pytest.raises(StewardError):
            await lost
        with pytest.raises(StewardError):
            writer.send(ev.RunEvent(run_resumed=ev.RunResumed()))
        with pytest.raises(StewardError):
            writer.text(1, "x")
        assert await writer.abandon() == []
        assert _payloads(await claimed.log()) == ["run_started"]
        assert await claimed.messages() == []


async def test_abandon_lets_queued_writes_land_and_returns_what_was_only_buffered(claimed: Claimed) -> None:
    with acting_for(claimed.user):
        writer = claimed.writer()
        writer.send(ev.RunEvent(run_started=ev.RunStarted()))
        writer.checkpoint_soon(pb.CheckpointRunRequest(messages=[_text("kept")]))
        writer.later(ev.RunEvent(step=1, step_started=ev.StepStarted()))  # buffered, in no write yet
        left = await writer.abandon()
        assert _payloads(left) == ["step_started"]
        assert _payloads(await claimed.log()) == ["run_started"]
        assert await claimed.messages() == ["kept"]


async def test_large_writes_queued_together_are_sent_in_requests_that_fit(claimed: Claimed) -> None:
    with acting_for(claimed.user):
        writer = claimed.writer()
        writer.send(ev.RunEvent(run_started=ev.RunStarted()))  # in flight while the large ones queue behind it
        big = "x" * 3_000_000  # three of these merged would pass gRPC's 8 MiB message limit
        done = [writer.checkpoint_soon(pb.CheckpointRunRequest(messages=[_text(big)])) for _ in range(3)]
        await writer.settle()
        assert all(future.done() and future.exception() is None for future in done)
        assert [len(text) for text in await claimed.messages()] == [len(big)] * 3


async def test_nothing_is_written_after_the_write_that_ends_the_run(claimed: Claimed) -> None:
    with acting_for(claimed.user):
        writer = claimed.writer()
        end = pb.CheckpointRunRequest(
            events=[ev.RunEvent(run_completed=ev.RunCompleted())], state=run_pb2.RUN_STATE_COMPLETED
        )
        ended = writer.checkpoint_soon(end)
        with pytest.raises(RuntimeError):
            writer.send(ev.RunEvent(run_incomplete=ev.RunIncomplete()))
        await ended
        assert _payloads(await claimed.log()) == ["run_completed"]


async def test_a_run_records_the_agent_version_of_its_run_started_event_once(claimed: Claimed) -> None:
    runs, run = claimed.runs, claimed.run
    with acting_for(claimed.user):
        assert (await runs.GetRun(pb.GetRunRequest(id=run.id))).run.agent_version == 0  # not started yet
        started = ev.RunEvent(run_started=ev.RunStarted(agent_id="a", agent_version=3))
        append = pb.AppendRunEventsRequest(run_id=run.id, lease_epoch=run.lease_epoch, events=[started])
        await runs.AppendRunEvents(append)
        resumed = ev.RunEvent(run_resumed=ev.RunResumed(agent_version=4))  # the agent changed meanwhile
        checkpoint = pb.CheckpointRunRequest(run_id=run.id, lease_epoch=run.lease_epoch, events=[resumed])
        after = (await runs.CheckpointRun(checkpoint)).run
        assert after.agent_version == 3
        assert (await runs.GetRun(pb.GetRunRequest(id=run.id))).run.agent_version == 3

        # The same through a checkpoint (the run's first write may be one).
        second = (await runs.CreateRun(pb.CreateRunRequest(conversation_id=run.conversation_id))).run
        claim = pb.ClaimRunRequest(id=second.id, holder="writer-test", lease_ttl=Duration(seconds=60))
        second = (await runs.ClaimRun(claim)).run
        first_write = pb.CheckpointRunRequest(
            run_id=second.id,
            lease_epoch=second.lease_epoch,
            events=[ev.RunEvent(run_started=ev.RunStarted(agent_version=7))],
        )
        assert (await runs.CheckpointRun(first_write)).run.agent_version == 7
        assert (await runs.GetRun(pb.GetRunRequest(id=second.id))).run.agent_version == 7
