"""A user of the crash-test stack: agents, conversations, runs, event logs and decisions over gRPC."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from examples.notes_mcp.store import AppliedWrite, NotesStore, create_note, read_applied_writes
from steward.auth import METADATA_KEY, TokenSigner
from steward.common.v1 import content_pb2
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2, execution_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.runtime.harness import notes_agent
from tests.runtime.procs import Backplane, RuntimeProcess
from tests.support.grpc_helpers import principal_metadata

ENDED = {
    run_pb2.RUN_STATE_COMPLETED,
    run_pb2.RUN_STATE_FAILED,
    run_pb2.RUN_STATE_CANCELLED,
    run_pb2.RUN_STATE_INCOMPLETE,
    run_pb2.RUN_STATE_EXPIRED,
}
TERMINAL_EVENTS = {"run_completed", "run_failed", "run_cancelled", "run_incomplete", "run_expired"}
Metadata = tuple[tuple[str, str], ...]
Event = run_event_pb2.RunEvent


def kinds(events: Iterable[Event]) -> list[str]:
    return [str(event.WhichOneof("payload")) for event in events]


def assert_gap_free(events: list[Event]) -> None:
    """Seqs 1..N with no gap or duplicate, the log ends with a terminal event, and only a paused run resumes:
    run_resumed follows run_paused, a takeover (step_restarted) never interrupts a pause (ADR 0009)."""
    names = kinds(events)
    assert [event.seq for event in events] == list(range(1, len(events) + 1)), names
    assert names[-1] in TERMINAL_EVENTS, names
    paused = False
    for index, name in enumerate(names):
        if name in ("run_resumed", "step_restarted"):
            assert paused == (name == "run_resumed"), (index, names)
        paused = name == "run_paused" or (paused and name not in ("run_resumed", *TERMINAL_EVENTS))


def seed_note(notes_data: Path, title: str) -> str:
    """Create a note directly in the notes server's data file (recorded with no key); its id."""
    store = NotesStore(notes_data)
    try:
        outcome, _ = store.apply_write(None, "create_note", {"title": title}, create_note({"title": title}))
    finally:
        store.close()
    return str(outcome.structured["note"]["id"])


@dataclass
class Follower:
    """A live reader of a run's event log (StreamRunEvents with follow), from its first event to its last."""

    events: list[Event] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def seen(self, kind: str) -> bool:
        return kind in kinds(self.events)

    async def finished(self, within: float = 30.0) -> list[Event]:
        assert self.task is not None
        await asyncio.wait_for(self.task, within)
        return self.events


class User:
    """One user of the stack, with an agent that may use the notes tools (writes need confirmation)."""

    def __init__(self, plane: Backplane, notes_data: Path) -> None:
        self.plane = plane
        self.notes_data = notes_data
        self.user_id = f"user-{uuid.uuid4().hex[:8]}"
        self.metadata: Metadata = principal_metadata(plane.secret, self.user_id)
        # The runtime acting for this user: only it may read the execution ledger.
        token = TokenSigner(plane.secret, issuer="tests").mint(self.user_id, actor="runtime")
        self.as_runtime: Metadata = ((METADATA_KEY, token),)
        self._store = grpc.aio.insecure_channel(plane.address(plane.store))
        self._confirm = grpc.aio.insecure_channel(plane.address(plane.confirm))
        self._runtimes: dict[str, grpc.aio.Channel] = {}
        self.runs = store_grpc.RunServiceStub(self._store)
        self.conversations = store_grpc.ConversationServiceStub(self._store)
        self.agents = store_grpc.AgentServiceStub(self._store)
        self.confirm = confirm_grpc.ConfirmationServiceStub(self._confirm)
        self.agent_id = ""

    async def close(self) -> None:
        for channel in (self._store, self._confirm, *self._runtimes.values()):
            await channel.close()

    async def create_agent(self) -> str:
        agent = notes_agent()
        created = await self.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=self.metadata)
        self.agent_id = created.agent.id
        return self.agent_id

    def runtime(self, process: RuntimeProcess) -> runtime_grpc.RuntimeServiceAsyncStub:
        channel = self._runtimes.get(process.address)
        if channel is None:
            channel = self._runtimes[process.address] = grpc.aio.insecure_channel(process.address)
        return runtime_grpc.RuntimeServiceStub(channel)

    async def conversation(self) -> str:
        reply = await self.conversations.CreateConversation(
            store_pb.CreateConversationRequest(title="crash", agent_id=self.agent_id), metadata=self.metadata
        )
        return reply.conversation.id

    async def conversation_with_call(self, said: str, tool: str, arguments: dict[str, object]) -> str:
        """A conversation in which the assistant already called `tool` (the demo model cannot fill in a note id,
        so the call is seeded as history; a run created with no input starts by resolving it)."""
        conversation_id = await self.conversation()
        text = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=said))
        call = content_pb2.ToolCallBlock(
            id=f"call_{uuid.uuid4().hex[:8]}", name=tool, arguments_json=json.dumps(arguments)
        )
        for message in (
            content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=[text]),
            content_pb2.ChatMessage(
                role=content_pb2.ROLE_ASSISTANT, content=[content_pb2.ContentBlock(tool_call=call)]
            ),
        ):
            await self.conversations.AppendMessage(
                store_pb.AppendMessageRequest(conversation_id=conversation_id, message=message), metadata=self.metadata
            )
        return conversation_id

    async def start_run(self, process: RuntimeProcess, text: str = "", conversation_id: str = "") -> run_pb2.Run:
        """CreateRun on `process` (which then drives the run), with `text` as input unless empty."""
        conversation_id = conversation_id or await self.conversation()
        blocks = [content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))] if text else []
        reply = await self.runtime(process).CreateRun(
            runtime_pb.CreateRunRequest(conversation_id=conversation_id, input=blocks), metadata=self.metadata
        )
        return reply.run

    async def messages(self, run: run_pb2.Run) -> list[content_pb2.ChatMessage]:
        reply = await self.conversations.ListMessages(
            store_pb.ListMessagesRequest(conversation_id=run.conversation_id, page_size=200), metadata=self.metadata
        )
        return [content_pb2.ChatMessage(role=m.role, content=m.content) for m in reply.messages]

    async def run(self, run_id: str) -> run_pb2.Run:
        return (await self.runs.GetRun(store_pb.GetRunRequest(id=run_id), metadata=self.metadata)).run

    async def wait(self, run_id: str, *, paused: bool = False, within: float = 30.0) -> run_pb2.Run:
        """The run once it ended (or, with `paused`, once it paused)."""
        deadline = time.monotonic() + within
        while True:
            run = await self.run(run_id)
            if run.state in ENDED or (paused and run.state == run_pb2.RUN_STATE_PAUSED):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run_pb2.RunState.Name(run.state)} after {within}s")
            await asyncio.sleep(0.05)

    async def wait_claimed_after(self, run_id: str, epoch: int, *, within: float = 30.0) -> run_pb2.Run:
        """The run once a claim took it past lease epoch `epoch`."""
        deadline = time.monotonic() + within
        while True:
            run = await self.run(run_id)
            if run.lease_epoch > epoch:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} not claimed again after {within}s: {run}")
            await asyncio.sleep(0.05)

    async def events(self, run_id: str) -> list[Event]:
        """The run's whole event log as a reader replaying it sees it."""
        stream = self.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=self.metadata)
        return [item.event async for item in stream]

    def follow(self, run_id: str) -> Follower:
        follower = Follower()

        async def read() -> None:
            request = store_pb.StreamRunEventsRequest(run_id=run_id, follow=True)
            async for item in self.runs.StreamRunEvents(request, metadata=self.metadata):
                follower.events.append(item.event)

        follower.task = asyncio.create_task(read())
        return follower

    async def confirmations(
        self, run_id: str, *states: confirmation_pb2.ConfirmationState.ValueType
    ) -> list[confirmation_pb2.Confirmation]:
        """The run's confirmations in `states` (default: pending), oldest first."""
        reply = await self.confirm.ListConfirmations(
            confirm_pb.ListConfirmationsRequest(run_id=run_id, states=states, page_size=200), metadata=self.metadata
        )
        return sorted(reply.confirmations, key=lambda c: c.create_time.ToNanoseconds())

    async def pending(self, run_id: str) -> confirmation_pb2.Confirmation:
        [confirmation] = await self.confirmations(run_id)
        return confirmation

    async def decide(self, confirmation_id: str, decision: dict[str, object]) -> confirmation_pb2.Confirmation:
        reply = await self.confirm.DecideConfirmation(
            confirm_pb.DecideConfirmationRequest(
                confirmation_id=confirmation_id,
                decision_json=json.dumps(decision),
                surface=confirmation_pb2.SURFACE_GRPC,
            ),
            metadata=self.metadata,
        )
        return reply.confirmation

    async def execution(self, confirmation_id: str) -> execution_pb2.Execution:
        reply = await self.confirm.GetExecution(
            confirm_pb.GetExecutionRequest(confirmation_id=confirmation_id), metadata=self.as_runtime
        )
        return reply.execution

    async def audit(self, confirmation_id: str) -> list[str]:
        """The kinds of the confirmation's audit events, oldest first (EXECUTION_STARTED, ...)."""
        reply = await self.confirm.ListAuditEvents(
            confirm_pb.ListAuditEventsRequest(confirmation_id=confirmation_id, page_size=500), metadata=self.metadata
        )
        return [
            audit_event_pb2.AuditEventKind.Name(e.kind).removeprefix("AUDIT_EVENT_KIND_") for e in reply.audit_events
        ]

    def applied_writes(self, key: str | None = None) -> list[AppliedWrite]:
        """The notes server's own record of applied writes (with idempotency key `key`, if given)."""
        writes = read_applied_writes(self.notes_data) if self.notes_data.exists() else []
        return [w for w in writes if key is None or w.idempotency_key == key]


async def whole_log(user: User, run_id: str, follower: Follower) -> list[Event]:
    """The run's log replayed, checked gap-free and identical to what the live reader saw across the crash."""
    replayed = await user.events(run_id)
    assert_gap_free(replayed)
    assert await follower.finished() == replayed
    return replayed


def text_after_last_restart(events: list[Event]) -> str:
    """The answer as a reader builds it: text deltas, dropping a restarted step's partial output."""
    text = ""
    for event in events:
        if event.HasField("step_restarted"):
            text = ""
        elif event.HasField("text_delta"):
            text += event.text_delta.text
    return text
