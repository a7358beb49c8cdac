"""The agent loop: claim a run, stream one model step into the event log, commit.

Foundation scope: one model step per run with the built-in default agent and
no tools. Tools, confirmations, limits, cancellation and crash recovery arrive
with the runtime issue; the event kinds and store calls here are already the
final ones.
"""

from __future__ import annotations

import asyncio

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration

from services.runtime.events import EventWriter
from services.runtime.settings import RuntimeSettings
from steward.common.v1 import content_pb2, usage_pb2
from steward.errors import StewardError, from_rpc_error
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc

log = structlog.get_logger(__name__)

HISTORY_PAGE_SIZE = 1000


class RunLoop:
    def __init__(
        self,
        settings: RuntimeSettings,
        runs: store_grpc.RunServiceAsyncStub,
        conversations: store_grpc.ConversationServiceAsyncStub,
        provider: provider_grpc.ProviderServiceAsyncStub,
    ) -> None:
        self._settings = settings
        self._runs = runs
        self._conversations = conversations
        self._provider = provider

    async def execute(self, run: run_pb2.Run) -> None:
        """Run to a terminal state, recording failures in the run itself."""
        with structlog.contextvars.bound_contextvars(run_id=run.id):
            try:
                claimed = await self._runs.ClaimRun(
                    store_pb.ClaimRunRequest(
                        id=run.id,
                        holder=self._settings.replica_id,
                        lease_ttl=Duration(seconds=self._settings.lease_seconds),
                    )
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("claim_failed", reason=from_rpc_error(exc).reason)
                return
            epoch = claimed.run.lease_epoch
            try:
                await self._step(claimed.run, epoch)
            except asyncio.CancelledError:
                log.info("run_interrupted", epoch=epoch)
                raise
            except grpc.aio.AioRpcError as exc:
                await self._fail(run.id, epoch, from_rpc_error(exc))
            except StewardError as exc:
                await self._fail(run.id, epoch, exc)
            except Exception:
                log.exception("run_crashed")
                await self._fail(run.id, epoch, StewardError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))

    async def _history(self, conversation_id: str) -> list[content_pb2.ChatMessage]:
        history: list[content_pb2.ChatMessage] = []
        token = ""
        while True:
            page = await self._conversations.ListMessages(
                store_pb.ListMessagesRequest(
                    conversation_id=conversation_id, page_size=HISTORY_PAGE_SIZE, page_token=token
                )
            )
            history.extend(content_pb2.ChatMessage(role=m.role, content=m.content) for m in page.messages)
            if not page.next_page_token:
                return history
            token = page.next_page_token

    async def _step(self, run: run_pb2.Run, epoch: int) -> None:
        route = self._settings.default_model_route
        writer = EventWriter(self._runs, run.id, epoch, self._settings.text_flush_interval)
        step = run.step_count + 1
        await writer.emit(ev.RunEvent(run_started=ev.RunStarted(agent_id=run.agent_id, model_route=route)))
        await writer.emit(ev.RunEvent(step=step, step_started=ev.StepStarted(model_route=route)))
        history = await self._history(run.conversation_id)
        parts: list[str] = []
        usage = usage_pb2.Usage()
        stream = self._provider.Generate(
            provider_pb.GenerateRequest(
                route=route,
                system=self._settings.default_system_prompt,
                messages=history,
                max_tokens=self._settings.default_max_output_tokens,
                run_id=run.id,
                agent_id=run.agent_id,
                step=step,
                request_id=f"{run.id}/{epoch}/{step}",
            )
        )
        async for chunk in stream:
            kind = chunk.WhichOneof("event")
            if kind == "text_delta":
                parts.append(chunk.text_delta.text)
                await writer.text(step, chunk.text_delta.text)
            elif kind == "reasoning_delta":
                await writer.emit(
                    ev.RunEvent(step=step, reasoning_delta=ev.ReasoningDelta(text=chunk.reasoning_delta.text))
                )
            elif kind == "usage":
                usage.CopyFrom(chunk.usage)
        await writer.close()
        answer = content_pb2.ChatMessage(
            role=content_pb2.ROLE_ASSISTANT,
            content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="".join(parts)))],
        )
        committed = await self._runs.CheckpointRun(
            store_pb.CheckpointRunRequest(
                run_id=run.id,
                lease_epoch=epoch,
                messages=[answer],
                events=[ev.RunEvent(step=step, usage=ev.UsageReported(usage=usage, run_total=usage))],
                step_count=step,
                usage=usage,
                request_id=f"{run.id}/{epoch}/step/{step}",
            )
        )
        await self._runs.CheckpointRun(
            store_pb.CheckpointRunRequest(
                run_id=run.id,
                lease_epoch=epoch,
                events=[ev.RunEvent(run_completed=ev.RunCompleted(message_id=committed.messages[0].id))],
                state=run_pb2.RUN_STATE_COMPLETED,
                step_count=step,
                usage=usage,
                request_id=f"{run.id}/{epoch}/completed",
            )
        )
        log.info("run_completed", steps=step, output_tokens=usage.output_tokens)

    async def _fail(self, run_id: str, epoch: int, error: StewardError) -> None:
        transient = error.metadata.get("transient") == "true" or error.code == grpc.StatusCode.UNAVAILABLE
        run_error = run_pb2.RunError(reason=error.reason, message=error.message, transient=transient)
        log.warning("run_failed", reason=error.reason, transient=transient)
        try:
            await self._runs.CheckpointRun(
                store_pb.CheckpointRunRequest(
                    run_id=run_id,
                    lease_epoch=epoch,
                    events=[ev.RunEvent(run_failed=ev.RunFailed(error=run_error))],
                    state=run_pb2.RUN_STATE_FAILED,
                    error=run_error,
                    request_id=f"{run_id}/{epoch}/failed",
                )
            )
        except grpc.aio.AioRpcError as exc:
            log.error("run_fail_not_recorded", reason=from_rpc_error(exc).reason)
