"""Cancel in every state a run can be in, and the limits that end a run incomplete."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from services.runtime.hooks import Hook, StepInfo, ToolCall
from steward.common.v1 import content_pb2, limits_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, world


async def cancel(running: World, run_id: str) -> run_pb2.Run:
    reply = await running.runtime.CancelRun(runtime_pb.CancelRunRequest(id=run_id), metadata=running.user)
    return reply.run


class ToolCallsBegun(Hook):
    """The confirmation ids of the tool calls the runtime has begun (its tool-call-start hook)."""

    def __init__(self) -> None:
        self.confirmations: set[str] = set()

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        self.confirmations.add(call.confirmation_id)


async def wait_for_event(running: World, run_id: str, kind: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while kind not in await running.events(run_id):  # noqa: ASYNC110 - the event log is polled, not signalled
            await asyncio.sleep(0.02)


async def test_cancel_while_the_model_streams(tmp_path: Path) -> None:
    async with world(tmp_path, demo_token_interval=0.05) as running:  # the demo answer takes seconds
        run = await running.start_run("Tell me something long.")
        await wait_for_event(running, run.id, "text_delta")
        await cancel(running, run.id)
        ended = await running.wait(run.id)
        assert ended.state == run_pb2.RUN_STATE_CANCELLED
        kinds = await running.events(run.id)
        assert kinds[-1] == "run_cancelled"
        assert "run_completed" not in kinds


async def test_cancel_while_a_tool_runs(tmp_path: Path) -> None:
    calls = ToolCallsBegun()
    async with world(tmp_path, hooks=[calls]) as running:
        run = await running.start_run("create_note Slow one")
        await running.wait(run.id, paused=True)
        confirmation = await running.pending_confirmation(run.id)
        edited = {"title": "Slow one", "delay_seconds": 2}
        await running.decide(confirmation.id, {"outcome": "approve", "edited_arguments": edited})
        async with asyncio.timeout(10):
            while confirmation.id not in calls.confirmations:  # noqa: ASYNC110 - the hook is polled, not signalled
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the write is in the notes server now, for 2 s
        await cancel(running, run.id)
        ended = await running.wait(run.id)
        assert ended.state == run_pb2.RUN_STATE_CANCELLED
        assert (await running.events(run.id))[-1] == "run_cancelled"
        await asyncio.sleep(2.5)  # past the write's delay: whatever the server was going to apply is applied
        keys = [write.idempotency_key for write in running.applied_writes()]
        # At most once, under the approved confirmation's key (whether the server finished the call it had is its
        # own affair); the cancelled run never sends the write again.
        assert keys in ([], [confirmation.id])
        assert (await running.run(run.id)).state == run_pb2.RUN_STATE_CANCELLED


async def test_cancel_before_the_run_started(tmp_path: Path) -> None:
    # A run the store holds queued, which no replica has claimed yet (the sweep that would is minutes away), under
    # an id the client minted: the client can cancel it by that id before it starts, and creating it again with the
    # same id returns the cancelled run instead of starting one.
    async with world(tmp_path, sweep_interval=600) as running:
        await asyncio.sleep(0.5)  # past the replica's start-up sweep, which would claim a queued run
        conversation = await running.conversations.CreateConversation(
            store_pb.CreateConversationRequest(title="queued"), metadata=running.user
        )
        run_id = str(uuid.uuid4())
        block = content_pb2.ContentBlock(text=content_pb2.TextBlock(text="never run"))
        created = await running.runs.CreateRun(
            store_pb.CreateRunRequest(
                conversation_id=conversation.conversation.id,
                run_id=run_id,
                input_message=content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=[block]),
            ),
            metadata=running.user,
        )
        assert (created.run.id, created.run.state) == (run_id, run_pb2.RUN_STATE_QUEUED)
        cancelled = await cancel(running, run_id)
        assert cancelled.state == run_pb2.RUN_STATE_CANCELLED
        assert await running.events(run_id) == ["run_cancelled"]

        again = await running.runtime.CreateRun(
            runtime_pb.CreateRunRequest(conversation_id=conversation.conversation.id, run_id=run_id, input=[block]),
            metadata=running.user,
        )
        assert again.existed
        assert (again.run.id, again.run.state) == (run_id, run_pb2.RUN_STATE_CANCELLED)
        await asyncio.sleep(0.3)  # time enough for a run that had been started to show it
        assert (await running.run(run_id)).state == run_pb2.RUN_STATE_CANCELLED
        assert await running.events(run_id) == ["run_cancelled"]


async def test_cancelling_an_ended_run_changes_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as running:
        run = await running.start_run("Hello")
        ended = await running.wait(run.id)
        assert ended.state == run_pb2.RUN_STATE_COMPLETED
        assert (await cancel(running, run.id)).state == run_pb2.RUN_STATE_COMPLETED
        assert (await running.events(run.id))[-1] == "run_completed"


async def test_max_tokens_ends_the_run_incomplete(tmp_path: Path) -> None:
    # The demo model's tool step counts 4 tokens; the answer step gets the 1 token left and is cut short.
    async with world(tmp_path) as running:
        run = await running.start_run("Please list_notes", limits=limits_pb2.RunLimits(max_tokens=5))
        ended = await running.wait(run.id)
        assert (ended.state, ended.incomplete_reason) == (
            run_pb2.RUN_STATE_INCOMPLETE,
            run_pb2.INCOMPLETE_REASON_MAX_TOKENS,
        )
        assert ended.usage.input_tokens + ended.usage.output_tokens >= 5


async def test_the_wall_clock_limit_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    # The approved write takes 2 s, longer than the run's whole limit (1 s): the limit never leaves it half done.
    async with world(tmp_path) as running:
        run = await running.start_run("create_note Slow one", limits=limits_pb2.RunLimits(timeout=Duration(seconds=1)))
        await running.wait(run.id, paused=True)
        confirmation = await running.pending_confirmation(run.id)
        edited = {"title": "Slow one", "delay_seconds": 2}
        await running.decide(confirmation.id, {"outcome": "approve", "edited_arguments": edited})
        ended = await running.wait(run.id)
        assert (ended.state, ended.incomplete_reason) == (
            run_pb2.RUN_STATE_INCOMPLETE,
            run_pb2.INCOMPLETE_REASON_TIMEOUT,
        )
        kinds = await running.events(run.id)
        assert kinds[-2:] == ["tool_call_finished", "run_incomplete"]  # the write's result first, then the end
        assert [write.idempotency_key for write in running.applied_writes()] == [confirmation.id]
        results = [
            block.tool_result
            for message in await running.messages(ended)
            for block in message.content
            if block.HasField("tool_result")
        ]
        assert [(result.is_error, "Slow one" in result.content) for result in results] == [(False, True)]
