"""Tool results over the deployment's limit: a tool's is cut to it with a note the model reads, a client's is
refused; either way nothing too large for a message reaches the log or the conversation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from steward.common.v1 import content_pb2
from steward.errors import from_rpc_error
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, world
from tests.runtime.procs_client import seed_note

LIMIT = 1000
ECHO = content_pb2.ToolSpec(
    name="echo",
    description="Echo a text.",
    input_schema_json=json.dumps({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
)


@pytest.fixture(scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("limits"), max_tool_result_chars=LIMIT) as started:
        yield started


async def _conversation_with_call(running: World, tool: str, arguments: dict[str, object]) -> str:
    """A conversation in which the assistant already called `tool` (the demo model cannot fill in a note id)."""
    conversation = await running.conversations.CreateConversation(
        store_pb.CreateConversationRequest(title="limits", agent_id=running.agent_id), metadata=running.user
    )
    call = content_pb2.ToolCallBlock(id="call_big", name=tool, arguments_json=json.dumps(arguments))
    for message in (
        content_pb2.ChatMessage(
            role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="read it"))]
        ),
        content_pb2.ChatMessage(role=content_pb2.ROLE_ASSISTANT, content=[content_pb2.ContentBlock(tool_call=call)]),
    ):
        await running.conversations.AppendMessage(
            store_pb.AppendMessageRequest(conversation_id=conversation.conversation.id, message=message),
            metadata=running.user,
        )
    return conversation.conversation.id


async def test_a_tool_result_over_the_limit_is_cut_with_a_note(limited: World) -> None:
    note_id = seed_note(limited.notes_data, "x" * (3 * LIMIT))  # read_note returns the note, title and all
    conversation_id = await _conversation_with_call(limited, "notes.read_note", {"id": note_id})
    created = await limited.runtime.CreateRun(
        runtime_pb.CreateRunRequest(conversation_id=conversation_id), metadata=limited.user
    )
    ended = await limited.wait(created.run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    results = [b.tool_result for m in await limited.messages(ended) for b in m.content if b.HasField("tool_result")]
    [result] = results
    assert not result.is_error
    kept, note = result.content[:LIMIT], result.content[LIMIT:]
    assert kept.count("x") > LIMIT // 2
    assert note.startswith("\n[truncated: the tool returned ")
    assert f"the first {LIMIT} are shown]" in note
    stream = limited.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=ended.id), metadata=limited.user)
    finished = [item.event.tool_call_finished async for item in stream if item.event.HasField("tool_call_finished")]
    assert [event.result for event in finished] == [result.content]  # the log shows what the model read


async def test_a_client_tool_result_over_the_limit_is_refused(limited: World) -> None:
    run = await limited.start_run("Please echo this", client_tools=[ECHO])
    paused = await limited.wait(run.id, paused=True)
    assert paused.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
    (call,) = [b.tool_call for b in (await limited.messages(paused))[-1].content if b.HasField("tool_call")]
    too_long = content_pb2.ToolResultBlock(tool_call_id=call.id, content="y" * (LIMIT + 1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await limited.runtime.SubmitToolResults(
            runtime_pb.SubmitToolResultsRequest(run_id=run.id, results=[too_long]), metadata=limited.user
        )
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason, error.metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "results[0].content",
    )
    assert (await limited.run(run.id)).state == run_pb2.RUN_STATE_PAUSED  # nothing changed: it still waits
    fits = content_pb2.ToolResultBlock(tool_call_id=call.id, content="y" * LIMIT)
    await limited.runtime.SubmitToolResults(
        runtime_pb.SubmitToolResultsRequest(run_id=run.id, results=[fits]), metadata=limited.user
    )
    assert (await limited.wait(run.id)).state == run_pb2.RUN_STATE_COMPLETED
