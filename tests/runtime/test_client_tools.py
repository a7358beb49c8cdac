"""Client-side tools: the run pauses for the caller's own tool, and resumes with its result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import update

from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.models import RunRow
from steward.common.v1 import content_pb2, limits_pb2
from steward.errors import Reason, from_rpc_error
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from tests.runtime.harness import World, world

WEATHER = content_pb2.ToolSpec(
    name="get_weather",
    description="The weather in a city.",
    input_schema_json=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("client-tools")) as started:
        yield started


async def submit(running: World, run_id: str, *results: content_pb2.ToolResultBlock) -> run_pb2.Run:
    reply = await running.runtime.SubmitToolResults(
        runtime_pb.SubmitToolResultsRequest(run_id=run_id, results=list(results)), metadata=running.user
    )
    return reply.run


async def test_a_client_tool_round_trip(running: World) -> None:
    run = await running.start_run("What is get_weather in Zürich?", client_tools=[WEATHER])
    paused = await running.wait(run.id, paused=True)
    assert paused.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
    assert [t.name for t in paused.client_tools] == ["client.get_weather"]
    kinds = await running.events(run.id)
    assert kinds[-2:] == ["client_tool_requested", "run_paused"]
    messages = await running.messages(paused)
    (call,) = [b.tool_call for b in messages[-1].content if b.HasField("tool_call")]
    assert call.name == "client.get_weather"
    assert json.loads(call.arguments_json) == {"city": "in Zürich?"}

    result = content_pb2.ToolResultBlock(tool_call_id=call.id, content="Sunny, 21 °C")
    await submit(running, run.id, result)
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED
    answer = (await running.messages(ended))[-1]
    assert "Sunny, 21 °C" in answer.content[0].text.text  # the demo model summarizes the tool result
    assert (await submit(running, run.id, result)).state == run_pb2.RUN_STATE_COMPLETED  # a repeat changes nothing


async def test_results_for_calls_the_run_does_not_wait_for_are_refused(running: World) -> None:
    run = await running.start_run("Hello there", client_tools=[WEATHER])
    await running.wait(run.id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(running, run.id, content_pb2.ToolResultBlock(tool_call_id="call_nope", content="x"))
    assert from_rpc_error(raised.value).reason == "RUN_STATE_CONFLICT"


@pytest.mark.parametrize(
    "spec",
    [
        content_pb2.ToolSpec(name="bad name!"),
        content_pb2.ToolSpec(name="ok", input_schema_json="[1]"),
        content_pb2.ToolSpec(name="ok", input_schema_json='{"type": "no-such-type"}'),
    ],
)
async def test_bad_client_tools_are_refused(running: World, spec: content_pb2.ToolSpec) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.start_run("hi", client_tools=[spec])
    assert from_rpc_error(raised.value).reason == "INVALID_ARGUMENT"


async def test_a_run_waiting_for_a_client_tool_can_be_cancelled(running: World) -> None:
    run = await running.start_run("What is get_weather in Oslo?", client_tools=[WEATHER])
    paused = await running.wait(run.id, paused=True)
    assert paused.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
    messages = await running.messages(paused)
    (call,) = [b.tool_call for b in messages[-1].content if b.HasField("tool_call")]

    reply = await running.runtime.CancelRun(runtime_pb.CancelRunRequest(id=run.id), metadata=running.user)
    assert reply.run.state == run_pb2.RUN_STATE_CANCELLED
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_CANCELLED
    kinds = await running.events(run.id)
    assert kinds[-3:] == ["client_tool_requested", "run_paused", "run_cancelled"]

    # The caller's result, arriving after the cancel, is refused and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(running, run.id, content_pb2.ToolResultBlock(tool_call_id=call.id, content="Rain"))
    assert from_rpc_error(raised.value).reason == "RUN_STATE_CONFLICT"
    assert (await running.run(run.id)).state == run_pb2.RUN_STATE_CANCELLED
    assert await running.messages(ended) == messages
    assert await running.events(run.id) == kinds


async def test_a_pause_past_its_deadline_is_expired_by_the_periodic_sweep(running: World) -> None:
    # The deadline is stored with the run: a replica that did not pause the run (no timer of its own: here, the
    # deadline moved in the store as if the pausing replica had died) still expires it at its next sweep (0.5 s).
    hour = limits_pb2.RunLimits(pause_timeout=Duration(seconds=3600))
    run = await running.start_run("What is get_weather in Bergen?", client_tools=[WEATHER], limits=hour)
    paused = await running.wait(run.id, paused=True)
    assert paused.HasField("pause_expire_time")
    (call,) = [b.tool_call for b in (await running.messages(paused))[-1].content if b.HasField("tool_call")]
    engine = create_engine(f"sqlite+aiosqlite:///{(running.stack.data_dir / 'steward.db').resolve()}")
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            passed = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(update(RunRow).where(RunRow.id == run.id).values(pause_expire_time=passed))
    finally:
        await engine.dispose()
    ended = await running.wait(run.id, within=10)
    assert (ended.state, ended.lease_epoch) == (run_pb2.RUN_STATE_EXPIRED, paused.lease_epoch + 1)
    assert (await running.events(run.id))[-3:] == ["client_tool_requested", "run_paused", "run_expired"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(running, run.id, content_pb2.ToolResultBlock(tool_call_id=call.id, content="Fog"))
    error = from_rpc_error(raised.value)
    assert (error.reason, "expired" in error.message) == (Reason.RUN_STATE_CONFLICT, True)
    assert (await running.run(run.id)).state == run_pb2.RUN_STATE_EXPIRED
