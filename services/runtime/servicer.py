"""RuntimeService: converts its requests and replies; what it does with runs is runs.py's."""

from __future__ import annotations

from typing import Any

import grpc

from services.runtime.run.context import Services
from services.runtime.run.loop import RunLoop
from services.runtime.runs import Runs
from services.runtime.tools import client
from services.runtime.tools.toolbox import Kind, ToolInfo
from steward.auth import require_user
from steward.common.v1 import content_pb2
from steward.errors import invalid_argument
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import store_service_pb2 as store_pb

Context = grpc.aio.ServicerContext[Any, Any]

MAX_INPUT_BLOCKS = 100
MAX_INPUT_CHARS = 200_000
_KINDS = {Kind.READ: pb.TOOL_KIND_READ, Kind.WRITE: pb.TOOL_KIND_WRITE, Kind.CLIENT: pb.TOOL_KIND_CLIENT}


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
        self._settings = services.settings
        self._runs = Runs(services, loop)

    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        """Create the run and drive it (Runs.create)."""
        owner = require_user().user_id
        new_conversation = request.HasField("new_conversation")
        if new_conversation == bool(request.conversation_id):
            raise invalid_argument("conversation_id", "give conversation_id or new_conversation (one of them)")
        specs = client.qualified(list(request.client_tools))
        _validate_input(list(request.input))
        create = store_pb.CreateRunRequest(
            conversation_id=request.conversation_id,
            run_id=request.run_id,
            agent_id=request.agent_id,
            agent_name="" if request.agent_id else request.agent_name,
            mode=request.mode,
            limits=request.limits,
            request_id=request.request_id,
            client_tools=specs,
        )
        if new_conversation:
            create.new_conversation.CopyFrom(request.new_conversation)
        if request.input:
            create.input_message.CopyFrom(content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=request.input))
        created = await self._runs.create(owner, create)
        return pb.CreateRunResponse(run=created.run, existed=created.existed)

    async def CancelRun(self, request: pb.CancelRunRequest, context: Context) -> pb.CancelRunResponse:
        require_user()
        if not request.id:
            raise invalid_argument("id", "id is required")
        return pb.CancelRunResponse(run=await self._runs.cancel(request.id))

    async def SubmitToolResults(
        self, request: pb.SubmitToolResultsRequest, context: Context
    ) -> pb.SubmitToolResultsResponse:
        """Record the caller's results and resume the run (Runs.submit_tool_results)."""
        owner = require_user().user_id
        if not request.run_id:
            raise invalid_argument("run_id", "run_id is required")
        ids = [result.tool_call_id for result in request.results]
        if not ids or len(set(ids)) != len(ids) or not all(ids):
            raise invalid_argument("results", "one result per tool call id, each with its tool_call_id")
        limit = self._settings.max_tool_result_chars
        for index, result in enumerate(request.results):
            if len(result.content) > limit:
                raise invalid_argument(f"results[{index}].content", f"a tool result may be at most {limit} characters")
        run = await self._runs.submit_tool_results(owner, request.run_id, list(request.results))
        return pb.SubmitToolResultsResponse(run=run)

    async def ListTools(self, request: pb.ListToolsRequest, context: Context) -> pb.ListToolsResponse:
        require_user()
        tools = await self._runs.tools(request.agent_id)
        return pb.ListToolsResponse(tools=[_tool(tool) for tool in sorted(tools, key=lambda t: t.name)])

    async def ListToolCatalog(self, request: pb.ListToolCatalogRequest, context: Context) -> pb.ListToolCatalogResponse:
        require_user()
        tools, servers = self._runs.catalogue()
        return pb.ListToolCatalogResponse(
            tools=[_tool(tool) for tool in sorted(tools, key=lambda t: t.name)],
            servers=[
                pb.ToolServer(
                    name=server.name,
                    trusted=server.trusted,
                    status=pb.TOOL_SERVER_STATUS_CONNECTED if server.connected else pb.TOOL_SERVER_STATUS_UNAVAILABLE,
                    tool_count=server.tool_count,
                )
                for server in servers
            ],
        )


def _tool(tool: ToolInfo) -> pb.Tool:
    return pb.Tool(
        name=tool.name,
        description=tool.description,
        input_schema_json=tool.input_schema_json,
        kind=_KINDS[tool.kind],
        idempotent=tool.idempotent,
        needs_confirmation=tool.needs_confirmation,
        destructive=tool.destructive,
        reason=tool.reason or ("client" if tool.kind is Kind.CLIENT else ""),
        server=tool.server,
    )
