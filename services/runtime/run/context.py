"""Everything one claimed run needs while this replica holds it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.runtime.agents import AgentSpec, Limits
from services.runtime.hooks import Hooks
from services.runtime.run.writer import EventWriter
from services.runtime.settings import RuntimeSettings
from services.runtime.tools.toolbox import Toolbox
from steward.common.v1 import content_pb2, usage_pb2
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc


class StartMode(enum.Enum):
    """How a task takes up a run: its first claim, after a decision or client results, or from a holder that died."""

    START = "start"
    RESUME = "resume"
    RECOVER = "recover"


@dataclass(frozen=True)
class Services:
    runs: store_grpc.RunServiceAsyncStub
    conversations: store_grpc.ConversationServiceAsyncStub
    agents: store_grpc.AgentServiceAsyncStub
    provider: provider_grpc.ProviderServiceAsyncStub
    confirm: confirm_grpc.ConfirmationServiceAsyncStub
    toolbox: Toolbox
    hooks: Hooks
    settings: RuntimeSettings


@dataclass
class RunContext:
    services: Services
    run: run_pb2.Run
    epoch: int
    agent: AgentSpec
    limits: Limits
    writer: EventWriter
    mode: int
    usage: usage_pb2.Usage = field(default_factory=usage_pb2.Usage)
    step_count: int = 0
    # The conversation: read when the loop starts, then extended with every message the claim checkpoints.
    history: list[content_pb2.ChatMessage] = field(default_factory=list)
    # The wall-clock limit of the claim (steps.drive); a write in progress holds it off (`writing`).
    wall_clock: asyncio.Timeout | None = None
    # Seconds the pause the claim ended with may last (0: it did not pause, or the pause has no deadline).
    pause_timeout: float = 0.0

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the wall-clock limit off while a write runs and its result is recorded: the limit never leaves a
        write half done with nobody asked. Past its deadline meanwhile, it ends the run at the next wait after."""
        clock = self.wall_clock if self.wall_clock is not None and not self.wall_clock.expired() else None
        deadline = clock.when() if clock is not None else None
        if clock is not None:
            clock.reschedule(None)
        try:
            yield
        finally:
            if clock is not None:
                clock.reschedule(deadline)  # already past: it fires at once

    @property
    def run_id(self) -> str:
        return self.run.id

    def checkpoint_soon(self, request: store_pb.CheckpointRunRequest) -> asyncio.Future[store_pb.CheckpointRunResponse]:
        """Queue a checkpoint (writer.py); its messages join the history now, in the order of the writes."""
        task = self.writer.checkpoint_soon(request)
        self.history.extend(content_pb2.ChatMessage(role=m.role, content=m.content) for m in request.messages)
        return task

    async def checkpoint(self, request: store_pb.CheckpointRunRequest) -> store_pb.CheckpointRunResponse:
        """`checkpoint_soon`, waited for."""
        return await self.checkpoint_soon(request)
