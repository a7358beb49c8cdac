"""The runtime benchmarks' stack: store, provider and confirm as processes, a runtime process, and a client."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.provider import _free_port
from services.store.db.run_rows import TERMINAL_EVENT_KINDS
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.runtime.harness import tools_file
from tests.support.grpc_helpers import principal_metadata


@dataclass
class Backing:
    """Store, provider and confirm, each in its own process, and the settings a runtime needs to reach them."""

    secret: str
    data_dir: Path
    addresses: dict[str, str]

    def runtime_settings(self, **more: object) -> dict[str, object]:
        return {
            "internal_secret": self.secret,
            "data_dir": str(self.data_dir),
            "log_level": "WARNING",
            "tools_file": str(tools_file(self.data_dir, self.data_dir / "notes.db")),
            **{f"{name}_address": address for name, address in self.addresses.items()},
            **more,
        }


def _environment(values: dict[str, object]) -> dict[str, str]:
    return {**os.environ, **{f"STEWARD_{name.upper()}": str(value) for name, value in values.items()}}


@asynccontextmanager
async def backing_services(data_dir: Path) -> AsyncIterator[Backing]:
    """`python -m services.<name>` for store, provider and confirm (as deployed: a process each), once they serve."""
    secret = secrets.token_urlsafe(32)
    addresses = {name: f"127.0.0.1:{_free_port()}" for name in ("store", "provider", "confirm")}
    base: dict[str, object] = {"internal_secret": secret, "data_dir": data_dir, "log_level": "WARNING"}
    base |= {f"{name}_address": address for name, address in addresses.items()}
    own: dict[str, dict[str, object]] = {
        "store": {"token_pepper": secrets.token_urlsafe(32), "retention_interval": 0},
        "provider": {"demo_token_interval": 0.0, "master_key": base64.b64encode(secrets.token_bytes(32)).decode()},
        "confirm": {},
    }
    processes: list[asyncio.subprocess.Process] = []
    try:
        for name, address in addresses.items():  # the store first: it creates the schema the others share
            env = _environment({**base, **own[name]})
            processes.append(await asyncio.create_subprocess_exec(sys.executable, "-m", f"services.{name}", env=env))
            async with grpc.aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), 60)
        yield Backing(secret, data_dir, addresses)
    finally:
        for process in reversed(processes):
            process.terminate()
            await process.wait()


class Client:
    """A user with an agent that may use the notes tools; starts runs through the runtime."""

    def __init__(self, backing: Backing, runtime_address: str) -> None:
        self.user = principal_metadata(backing.secret, f"bench-{uuid.uuid4().hex[:8]}")
        store = grpc.aio.insecure_channel(backing.addresses["store"])
        confirm = grpc.aio.insecure_channel(backing.addresses["confirm"])
        runtime = grpc.aio.insecure_channel(runtime_address)
        self.channels = [store, confirm, runtime]
        self.runs, self.conversations = store_grpc.RunServiceStub(store), store_grpc.ConversationServiceStub(store)
        self.agents, self.confirm = store_grpc.AgentServiceStub(store), confirm_grpc.ConfirmationServiceStub(confirm)
        self.runtime, self.agent_id = runtime_grpc.RuntimeServiceStub(runtime), ""

    async def create_agent(self) -> None:
        agent = agent_pb2.Agent(name="bench", system_prompt="You keep notes.", model_route="demo", tools=["notes.*"])
        agent.approval_policy.mode = agent_pb2.RUN_MODE_INTERACTIVE
        created = await self.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=self.user)
        self.agent_id = created.agent.id

    async def start(self, text: str) -> tuple[str, float]:
        """A run in a new conversation: its id, and when CreateRun was called (time.perf_counter)."""
        request = store_pb.CreateConversationRequest(title="bench", agent_id=self.agent_id)
        conversation = (await self.conversations.CreateConversation(request, metadata=self.user)).conversation
        block = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))
        called = time.perf_counter()
        create = runtime_pb.CreateRunRequest(conversation_id=conversation.id, input=[block])
        return (await self.runtime.CreateRun(create, metadata=self.user)).run.id, called

    async def follow(self, run_id: str, until: set[str]) -> list[ev.RunEvent]:
        """The run's events, followed live until one of the `until` kinds or the run's end."""
        request = store_pb.StreamRunEventsRequest(run_id=run_id, follow=True)
        call = self.runs.StreamRunEvents(request, metadata=self.user)
        events: list[ev.RunEvent] = []
        try:
            async for item in call:
                events.append(item.event)
                if item.event.WhichOneof("payload") in until | TERMINAL_EVENT_KINDS:
                    break
        finally:
            call.cancel()
        return events

    async def list_runs(self) -> list[run_pb2.Run]:
        runs: list[run_pb2.Run] = []
        token = ""
        while True:
            request = store_pb.ListRunsRequest(page_size=500, page_token=token)
            page = await self.runs.ListRuns(request, metadata=self.user)
            runs += page.runs
            if not (token := page.next_page_token):
                return runs

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@asynccontextmanager
async def runtime_process(backing: Backing) -> AsyncIterator[tuple[int, Client]]:
    """`python -m services.runtime`, configured by STEWARD_* variables, once it serves; its pid and a client."""
    address = f"127.0.0.1:{_free_port()}"
    env = _environment(backing.runtime_settings(runtime_address=address))
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.runtime", env=env)
    client = Client(backing, address)
    try:
        await asyncio.wait_for(client.channels[2].channel_ready(), 60)  # it binds once its tools are ready
        yield process.pid, client
    finally:
        await client.close()
        process.terminate()
        await process.wait()
