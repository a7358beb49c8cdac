"""Driving runs through the real services: an in-process stack whose runtime uses the example notes MCP server.

The offline demo model calls a tool when the user's message names it ("please list_notes"), with the
user's text in the tool's required string fields, and answers with a summary once it has the results,
so every test here runs with no key and no network.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from examples.notes_mcp.store import AppliedWrite, read_applied_writes
from services.runtime.hooks import Hook
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.grpc_helpers import principal_metadata
from tests.support.stack import Stack, running_stack

REPO = Path(__file__).resolve().parents[2]
ENDED = {
    run_pb2.RUN_STATE_COMPLETED,
    run_pb2.RUN_STATE_FAILED,
    run_pb2.RUN_STATE_CANCELLED,
    run_pb2.RUN_STATE_INCOMPLETE,
    run_pb2.RUN_STATE_EXPIRED,
}
Metadata = tuple[tuple[str, str], ...]


def tools_file(directory: Path, notes_data: Path) -> Path:
    """A tools config with the example notes server over stdio, trusted."""
    config = {
        "servers": {
            "notes": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "examples.notes_mcp", "--transport", "stdio", "--data", str(notes_data)],
                "cwd": str(REPO),
                "trust": "trusted",
            }
        }
    }
    path = directory / "tools.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@dataclass
class World:
    """A running stack, a user, an agent with the notes tools, and stubs acting as that user."""

    stack: Stack
    notes_data: Path
    user_id: str
    user: Metadata
    agent_id: str
    channels: list[grpc.aio.Channel]
    runs: store_grpc.RunServiceAsyncStub
    conversations: store_grpc.ConversationServiceAsyncStub
    agents: store_grpc.AgentServiceAsyncStub
    runtime: runtime_grpc.RuntimeServiceAsyncStub
    confirm: confirm_grpc.ConfirmationServiceAsyncStub

    def applied_writes(self) -> list[AppliedWrite]:
        return read_applied_writes(self.notes_data) if self.notes_data.exists() else []

    async def start_run(self, text: str, **fields: object) -> run_pb2.Run:
        conversation = await self.conversations.CreateConversation(
            store_pb.CreateConversationRequest(title="test", agent_id=self.agent_id), metadata=self.user
        )
        block = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))
        reply = await self.runtime.CreateRun(
            runtime_pb.CreateRunRequest(conversation_id=conversation.conversation.id, input=[block], **fields),  # type: ignore[arg-type]
            metadata=self.user,
        )
        return reply.run

    async def run(self, run_id: str) -> run_pb2.Run:
        return (await self.runs.GetRun(store_pb.GetRunRequest(id=run_id), metadata=self.user)).run

    async def wait(self, run_id: str, *, paused: bool = False, within: float = 20.0) -> run_pb2.Run:
        """The run once it ended (or, with `paused`, once it paused)."""
        deadline = time.monotonic() + within
        while True:
            run = await self.run(run_id)
            if run.state in ENDED or (paused and run.state == run_pb2.RUN_STATE_PAUSED):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run_pb2.RunState.Name(run.state)} after {within}s")
            await asyncio.sleep(0.05)

    async def events(self, run_id: str) -> list[str]:
        kinds = []
        stream = self.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=self.user)
        async for item in stream:
            kinds.append(str(item.event.WhichOneof("payload")))
        return kinds

    async def pending_confirmation(self, run_id: str) -> confirmation_pb2.Confirmation:
        reply = await self.confirm.ListConfirmations(
            confirm_pb.ListConfirmationsRequest(run_id=run_id), metadata=self.user
        )
        assert len(reply.confirmations) == 1, reply
        return reply.confirmations[0]

    async def decide(self, confirmation_id: str, decision: dict[str, object]) -> confirmation_pb2.Confirmation:
        reply = await self.confirm.DecideConfirmation(
            confirm_pb.DecideConfirmationRequest(
                confirmation_id=confirmation_id,
                decision_json=json.dumps(decision),
                surface=confirmation_pb2.SURFACE_GRPC,
            ),
            metadata=self.user,
        )
        return reply.confirmation

    async def messages(self, run: run_pb2.Run) -> list[content_pb2.ChatMessage]:
        reply = await self.conversations.ListMessages(
            store_pb.ListMessagesRequest(conversation_id=run.conversation_id, page_size=100), metadata=self.user
        )
        return [content_pb2.ChatMessage(role=m.role, content=m.content) for m in reply.messages]


def notes_agent(
    *, model_route: str = "demo", tools: Sequence[str] = ("notes.*",), prefix: str = "notes"
) -> agent_pb2.Agent:
    """An interactive agent that keeps notes with the example notes server, under a fresh name."""
    return agent_pb2.Agent(
        name=f"{prefix}-{uuid.uuid4().hex[:6]}",
        system_prompt="You keep notes.",
        model_route=model_route,
        tools=list(tools),
        approval_policy=agent_pb2.ApprovalPolicy(mode=agent_pb2.RUN_MODE_INTERACTIVE),
    )


@asynccontextmanager
async def world(
    directory: Path,
    *,
    demo_token_interval: float = 0.001,
    hooks: Sequence[Hook] = (),
    hooks_setting: str | None = None,
    provider: dict[str, object] | None = None,
    **runtime_settings: object,
) -> AsyncIterator[World]:
    """A running stack and a user with a notes agent; `hooks` are attached in code (after those the runtime's
    `hooks` setting loads: `hooks_setting`, else its default), `provider` overrides provider settings, the other
    keywords runtime settings."""
    notes_data = directory / "notes.db"
    settings: dict[str, object] = {
        "tools_file": str(tools_file(directory, notes_data)),
        "sweep_interval": 0.5,
        **runtime_settings,
    }
    if hooks_setting is not None:
        settings["hooks"] = hooks_setting
    async with running_stack(
        directory, demo_token_interval=demo_token_interval, runtime=settings, provider=provider, hooks=hooks
    ) as stack:
        user_id = f"user-{uuid.uuid4().hex[:8]}"
        user = principal_metadata(stack.secret, user_id)
        store = grpc.aio.insecure_channel(stack.address(stack.store))
        runtime = grpc.aio.insecure_channel(stack.address(stack.runtime))
        confirm = grpc.aio.insecure_channel(stack.address(stack.confirm))
        agents = store_grpc.AgentServiceStub(store)
        agent = notes_agent(tools=("notes.*", "time.now", "calc"))
        created = await agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=user)
        try:
            yield World(
                stack=stack,
                notes_data=notes_data,
                user_id=user_id,
                user=user,
                agent_id=created.agent.id,
                channels=[store, runtime, confirm],
                runs=store_grpc.RunServiceStub(store),
                conversations=store_grpc.ConversationServiceStub(store),
                agents=agents,
                runtime=runtime_grpc.RuntimeServiceStub(runtime),
                confirm=confirm_grpc.ConfirmationServiceStub(confirm),
            )
        finally:
            for channel in (store, runtime, confirm):
                await channel.close()
