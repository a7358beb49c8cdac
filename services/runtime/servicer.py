"""RuntimeService: starts, cancels, answers (client tool results) and describes runs of the loop."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration

from services.runtime.agents import DEFAULT_AGENT_NAME, AgentSpec, default_agent, from_stored
from services.runtime.run import steps
from services.runtime.run.context import Services, StartMode
from services.runtime.run.history import chat_messages, pending_calls, result_message
from services.runtime.run.loop import Known, RunLoop
from services.runtime.run.steps import cancel_confirmations
from services.runtime.tools import client
from services.runtime.tools.toolbox import CLIENT_PREFIX, Kind
from steward.auth import require_user
from steward.common.v1 import content_pb2
from steward.errors import failed_precondition, from_rpc_error, invalid_argument
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)
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


def _result_event(result: content_pb2.ToolResultBlock) -> ev.RunEvent:
    if result.is_error:
        failed = ev.ToolCallFailed(tool_call_id=result.tool_call_id, reason="CLIENT_TOOL_ERROR", message=result.content)
        return ev.RunEvent(tool_call_failed=failed)
    return ev.RunEvent(tool_call_finished=ev.ToolCallFinished(tool_call_id=result.tool_call_id, result=result.content))


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
        """Create the run (and its conversation, when asked) and claim it for this replica in one store call, which
        also finds its agent (by id, by name, or the conversation's), then drive it here; a run this replica cannot
        take now waits queued for a sweep. The name "steward" is the default agent unless the caller has an agent
        of that name."""
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
        if self._loop.free_slots():
            create.claim_holder = self._services.settings.replica_id
            create.lease_ttl.FromSeconds(self._loop.lease_seconds())
        if request.input:
            create.input_message.CopyFrom(content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=request.input))
        try:
            created = await self._services.runs.CreateRun(create)
        except grpc.aio.AioRpcError as exc:
            if create.agent_name != DEFAULT_AGENT_NAME or from_rpc_error(exc).reason != "AGENT_NOT_FOUND":
                raise  # NOT_FOUND (AGENT_NOT_FOUND) passes up
            create.agent_name = ""  # the caller has no agent named "steward": the default agent answers
            created = await self._services.runs.CreateRun(create)
        run = created.run
        if not created.existed and create.claim_holder:
            history = None
            if new_conversation:  # the conversation holds what this call put in it, nothing else
                history = [*request.new_conversation.messages]
                if create.HasField("input_message"):
                    history.append(create.input_message)
            settings = self._services.settings
            agent = from_stored(created.agent, settings) if created.HasField("agent") else default_agent(settings)
            if not self._loop.start(run.id, owner, StartMode.START, claimed=run, known=Known(agent, history)):
                self._loop.give_back(run)  # the replica filled up meanwhile: a sweep takes the run
        elif run.state == run_pb2.RUN_STATE_QUEUED:
            self._loop.start(run.id, owner, StartMode.START)
        return pb.CreateRunResponse(run=run, existed=created.existed)

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
        """Record the caller's results for the client tool calls its run waits for, and resume the run.

        Idempotent per tool call id: results for calls already answered are ignored. A result for a call
        the run does not wait for (not a client call, or not the run's current one) is RUN_STATE_CONFLICT.
        """
        owner = require_user().user_id
        if not request.run_id:
            raise invalid_argument("run_id", "run_id is required")
        ids = [result.tool_call_id for result in request.results]
        if not ids or len(set(ids)) != len(ids) or not all(ids):
            raise invalid_argument("results", "one result per tool call id, each with its tool_call_id")
        limit = self._services.settings.max_tool_result_chars
        for index, result in enumerate(request.results):
            if len(result.content) > limit:
                raise invalid_argument(f"results[{index}].content", f"a tool result may be at most {limit} characters")
        run = (await self._services.runs.GetRun(store_pb.GetRunRequest(id=request.run_id))).run
        messages = chat_messages(await steps.conversation_messages(self._services, run.conversation_id))
        pending = {call.id: call for call in pending_calls(messages).calls if call.name.startswith(CLIENT_PREFIX)}
        answered = {
            block.tool_result.tool_call_id
            for message in messages
            for block in message.content
            if block.WhichOneof("block") == "tool_result"
        }
        fresh = [result for result in request.results if result.tool_call_id not in answered]
        if not fresh:
            return pb.SubmitToolResultsResponse(run=run)  # a repeat
        waiting = (
            run.state == run_pb2.RUN_STATE_PAUSED and run.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
        )
        if not waiting or any(result.tool_call_id not in pending for result in fresh):
            raise failed_precondition("RUN_STATE_CONFLICT", "the run does not wait for results of these tool calls")
        claimed = (
            await self._services.runs.ClaimRun(
                store_pb.ClaimRunRequest(
                    id=run.id,
                    holder=self._services.settings.replica_id,
                    lease_ttl=Duration(seconds=self._services.settings.lease_seconds),
                )
            )
        ).run
        for result in fresh:
            await self._services.runs.CheckpointRun(
                store_pb.CheckpointRunRequest(
                    run_id=run.id,
                    lease_epoch=claimed.lease_epoch,
                    messages=[result_message(result.tool_call_id, result.content, is_error=result.is_error)],
                    events=[_result_event(result)],
                    request_id=f"{run.id}/{result.tool_call_id}/result",
                )
            )
        if not self._loop.start(run.id, owner, StartMode.RESUME, claimed=claimed):
            await self._services.runs.ReleaseRun(store_pb.ReleaseRunRequest(id=run.id, lease_epoch=claimed.lease_epoch))
        return pb.SubmitToolResultsResponse(run=claimed)

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
