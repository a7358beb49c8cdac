"""What the runtime service does with runs: create and start them, cancel them, take client tool results, list tools.

RuntimeService's servicer converts its requests and replies; the decisions are made here, on the store's and the
loop's terms.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration

from services.runtime.agents import DEFAULT_AGENT_NAME, AgentSpec, default_agent, from_stored
from services.runtime.run.confirmations import cancel_confirmations
from services.runtime.run.context import Services, StartMode
from services.runtime.run.history import pending_calls, read_history, result_message
from services.runtime.run.loop import Known, RunLoop
from services.runtime.tools.toolbox import CLIENT_PREFIX, ToolInfo, ToolServerInfo
from steward.common.v1 import content_pb2
from steward.errors import Reason, StewardError, failed_precondition
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb


class Runs:
    def __init__(self, services: Services, loop: RunLoop) -> None:
        self._services = services
        self._loop = loop

    async def create(self, owner: str, create: store_pb.CreateRunRequest) -> store_pb.CreateRunResponse:
        """Create the run (and its conversation, when asked) and claim it for this replica in one store call, which
        also finds its agent (by id, by name, or the conversation's), then drive it here; a run this replica cannot
        take now waits queued for a sweep. The name "steward" is the default agent unless the caller has an agent
        of that name."""
        if self._loop.free_slots():
            create.claim_holder = self._services.settings.replica_id
            create.lease_ttl.FromSeconds(self._loop.lease_seconds())
        try:
            created = await self._services.runs.CreateRun(create)
        except StewardError as error:
            if create.agent_name != DEFAULT_AGENT_NAME or error.reason != Reason.AGENT_NOT_FOUND:
                raise  # NOT_FOUND (AGENT_NOT_FOUND) passes up
            create.agent_name = ""  # the caller has no agent named "steward": the default agent answers
            created = await self._services.runs.CreateRun(create)
        run = created.run
        if not created.existed and create.claim_holder:
            known = Known(self._created_agent(created), _created_history(create))
            if not self._loop.start(run.id, owner, StartMode.START, claimed=run, known=known):
                self._loop.give_back(run)  # the replica filled up meanwhile: a sweep takes the run
        elif run.state == run_pb2.RUN_STATE_QUEUED:
            self._loop.start(run.id, owner, StartMode.START)
        return created

    def _created_agent(self, created: store_pb.CreateRunResponse) -> AgentSpec:
        settings = self._services.settings
        return from_stored(created.agent, settings) if created.HasField("agent") else default_agent(settings)

    async def cancel(self, run_id: str) -> run_pb2.Run:
        """Ask the run to cancel: a run that was not running is cancelled at once (its confirmations with it)."""
        run = (await self._services.runs.RequestRunCancel(store_pb.RequestRunCancelRequest(id=run_id))).run
        if run.state == run_pb2.RUN_STATE_CANCELLED:
            await cancel_confirmations(self._services, run.id, "run cancelled")
        elif run.state == run_pb2.RUN_STATE_RUNNING:
            # The holder stops at its next heartbeat; this replica's own task stops now.
            self._loop.cancel_local(run.id)
        return run

    async def submit_tool_results(
        self, owner: str, run_id: str, results: Sequence[content_pb2.ToolResultBlock]
    ) -> run_pb2.Run:
        """Record the caller's results for the client tool calls its run waits for, and resume the run.

        Idempotent per tool call id: results for calls already answered are ignored. A result for a call
        the run does not wait for (not a client call, or not the run's current one, or the run expired at its pause
        deadline, ADR 0018) is RUN_STATE_CONFLICT.
        """
        run = (await self._services.runs.GetRun(store_pb.GetRunRequest(id=run_id))).run
        messages = await read_history(self._services.conversations, run.conversation_id)
        pending = {call.id: call for call in pending_calls(messages).calls if call.name.startswith(CLIENT_PREFIX)}
        answered = {
            block.tool_result.tool_call_id
            for message in messages
            for block in message.content
            if block.WhichOneof("block") == "tool_result"
        }
        fresh = [result for result in results if result.tool_call_id not in answered]
        if not fresh:
            return run  # a repeat
        waiting = (
            run.state == run_pb2.RUN_STATE_PAUSED and run.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
        )
        if run.state == run_pb2.RUN_STATE_EXPIRED:
            raise failed_precondition(
                "RUN_STATE_CONFLICT", "the run expired: its pause deadline passed before these results came"
            )
        if not waiting or any(result.tool_call_id not in pending for result in fresh):
            raise failed_precondition("RUN_STATE_CONFLICT", "the run does not wait for results of these tool calls")
        claimed = await self._claim(run.id)
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
        return claimed

    async def _claim(self, run_id: str) -> run_pb2.Run:
        settings = self._services.settings
        request = store_pb.ClaimRunRequest(
            id=run_id, holder=settings.replica_id, lease_ttl=Duration(seconds=settings.lease_seconds)
        )
        return (await self._services.runs.ClaimRun(request)).run

    async def tools(self, agent_id: str) -> list[ToolInfo]:
        """The tools the agent (the default agent for "") may use in its own mode."""
        agent = await self._agent(agent_id)
        return await self._services.toolbox.tools_for(agent, agent.mode)

    def catalogue(self) -> tuple[list[ToolInfo], list[ToolServerInfo]]:
        """Every tool this replica knows, classified without any agent's policy, and its MCP servers."""
        return self._services.toolbox.catalogue()

    async def _agent(self, agent_id: str) -> AgentSpec:
        if not agent_id:
            return default_agent(self._services.settings)
        reply = await self._services.agents.GetAgent(store_pb.GetAgentRequest(id=agent_id))  # NOT_FOUND passes up
        return from_stored(reply.agent, self._services.settings)


def _created_history(create: store_pb.CreateRunRequest) -> list[content_pb2.ChatMessage] | None:
    """A new conversation holds what the call put in it, nothing else; None for an existing one (read it)."""
    if not create.HasField("new_conversation"):
        return None
    history = [*create.new_conversation.messages]
    if create.HasField("input_message"):
        history.append(create.input_message)
    return history


def _result_event(result: content_pb2.ToolResultBlock) -> ev.RunEvent:
    if result.is_error:
        failed = ev.ToolCallFailed(tool_call_id=result.tool_call_id, reason="CLIENT_TOOL_ERROR", message=result.content)
        return ev.RunEvent(tool_call_failed=failed)
    return ev.RunEvent(tool_call_finished=ev.ToolCallFinished(tool_call_id=result.tool_call_id, result=result.content))
