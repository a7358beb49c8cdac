"""RuntimeService: starts runs of the loop. CancelRun, SubmitToolResults and
ListTools answer UNIMPLEMENTED / NOT_IMPLEMENTED until the runtime issue lands."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import structlog

from services.runtime.loop import RunLoop
from steward.common.v1 import content_pb2
from steward.errors import invalid_argument, not_found
from steward.runtime.v1 import runtime_service_pb2 as pb
from steward.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc

log = structlog.get_logger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]

MAX_INPUT_BLOCKS = 100
MAX_INPUT_CHARS = 200_000


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
    def __init__(self, runs: store_grpc.RunServiceAsyncStub, loop: RunLoop) -> None:
        self._runs = runs
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()

    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        if not request.conversation_id:
            raise invalid_argument("conversation_id", "conversation_id is required")
        if request.agent_id:
            raise not_found("AGENT_NOT_FOUND", f"agent {request.agent_id} not found")
        if request.client_tools:
            raise invalid_argument("client_tools", "client tools are not supported yet")
        _validate_input(list(request.input))
        create = store_pb.CreateRunRequest(
            conversation_id=request.conversation_id,
            run_id=request.run_id,
            mode=request.mode,
            limits=request.limits,
            request_id=request.request_id,
        )
        if request.input:
            create.input_message.CopyFrom(content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=request.input))
        created = await self._runs.CreateRun(create)
        if not created.existed and created.run.state == run_pb2.RUN_STATE_QUEUED:
            self._start(created.run)
        return pb.CreateRunResponse(run=created.run, existed=created.existed)

    def _start(self, run: run_pb2.Run) -> None:
        # The task copies this call's context, so its store and provider calls
        # act for the same principal after the RPC has returned.
        task = asyncio.create_task(self._loop.execute(run), name=f"run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Stop in-flight loops; their runs keep their state for recovery."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
