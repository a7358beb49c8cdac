"""RuntimeService: starts, cancels and describes runs of the loop.

SubmitToolResults answers FAILED_PRECONDITION (RUN_STATE_CONFLICT): runs do not offer client-side
tools yet (CreateRun refuses them), so no run ever waits for their results.
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog

from services.runtime.agents import AgentSpec, default_agent, from_stored
from services.runtime.context import Services
from services.runtime.loop import START, RunLoop
from services.runtime.steps import cancel_confirmations
from services.runtime.toolbox import Kind
from steward.auth import require_user
from steward.common.v1 import content_pb2
from steward.errors import failed_precondition, invalid_argument
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]

MAX_INPUT_BLOCKS = 100
MAX_INPUT_CHARS = 200_000
_KINDS = {Kind.READ: pb.TOOL_KIND_READ, Kind.WRITE: pb.TOOL_KIND_WRITE}


def _validate_input(blocks: list[content_pb2.ContentBlock]) -> None:
    if len(blocks) > MAX_INPUT_BLOCKS:
        raise invalid_argument("input", f"at most {MAX_INPUT_BLOCKS} content blocks")
    total = 0
    for index, block in enumerate(blocks):
        kind = block.WhichOneof("block")
        if kind != "text":
            raise invalid_argument(f"input[{index}]", "input blocks must be text")
        total += len(block.text.text)
    if total > MAX_INPUT_CHARS:
        raise invalid_argument("input", f"input is longer than {MAX_INPUT_CHARS} characters")


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    def __init__(self, services: Services, loop: RunLoop) -> None:
        self._services = services
        self._loop = loop

    async def _agent(self, agent_id: str) -> AgentSpec:
        if not agent_id:
            return default_agent(self._services.settings)
        reply = await self._services.agents.GetAgent(store_pb.GetAgentRequest(id=agent_id))  # NOT_FOUND passes up
        return from_stored(reply.agent, self._services.settings)

    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        owner = require_user().user_id
        if not request.conversation_id:
            raise invalid_argument("conversation_id", "conversation_id is required")
        if request.client_tools:
            raise invalid_argument("client_tools", "client-side tools are not supported yet")
        _validate_input(list(request.input))
        agent_id = request.agent_id
        if not agent_id:
            conversation = await self._services.conversations.GetConversation(
                store_pb.GetConversationRequest(id=request.conversation_id)
            )
            agent_id = conversation.conversation.agent_id
        await self._agent(agent_id)
        create = store_pb.CreateRunRequest(
            conversation_id=request.conversation_id,
            run_id=request.run_id,
            agent_id=agent_id,
            mode=request.mode,
            limits=request.limits,
            request_id=request.request_id,
        )
        if request.input:
            create.input_message.CopyFrom(content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=request.input))
        created = await self._services.runs.CreateRun(create)
        if created.run.state == run_pb2.RUN_STATE_QUEUED:
            self._loop.start(created.run.id, owner, START)
        return pb.CreateRunResponse(run=created.run, existed=created.existed)

    async def CancelRun(self, request: pb.CancelRunRequest, context: Context) -> pb.CancelRunResponse:
        require_user()
        if not request.id:
            raise invalid_argument("id", "id is required")
        reply = await self._services.runs.RequestRunCancel(store_pb.RequestRunCancelRequest(id=request.id))
        run = reply.run
        if run.state == run_pb2.RUN_STATE_CANCELLED:
            await cancel_confirmations(self._services, run.id, "run cancelled")
        elif run.state == run_pb2.RUN_STATE_RUNNING:
            # The holder stops at its next heartbeat; this replica's own task stops now.
            self._loop.cancel_local(run.id)
        return pb.CancelRunResponse(run=run)

    async def SubmitToolResults(
        self, request: pb.SubmitToolResultsRequest, context: Context
    ) -> pb.SubmitToolResultsResponse:
        require_user()
        if not request.run_id:
            raise invalid_argument("run_id", "run_id is required")
        await self._services.runs.GetRun(store_pb.GetRunRequest(id=request.run_id))  # NOT_FOUND for a foreign run
        raise failed_precondition("RUN_STATE_CONFLICT", "the run is not waiting for client tool results")

    async def ListTools(self, request: pb.ListToolsRequest, context: Context) -> pb.ListToolsResponse:
        require_user()
        agent = await self._agent(request.agent_id)
        tools = await self._services.toolbox.tools_for(agent, agent.mode)
        return pb.ListToolsResponse(
            tools=[
                pb.Tool(
                    name=tool.name,
                    description=tool.description,
                    input_schema_json=tool.input_schema_json,
                    kind=_KINDS[tool.kind],
                    idempotent=tool.idempotent,
                )
                for tool in sorted(tools, key=lambda t: t.name)
            ]
        )
