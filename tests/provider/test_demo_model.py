"""The offline demo model calls tools, so the agent loop works with no key and no network."""

from __future__ import annotations

import json

from services.provider.adapters.base import GenerateCall, Upstream
from services.provider.demo import DemoAdapter
from steward.common.v1 import content_pb2 as c
from steward.provider.v1 import provider_service_pb2 as pb

NOTES = c.ToolSpec(
    name="notes.create",
    description="Create a note.",
    input_schema_json=json.dumps(
        {
            "type": "object",
            "properties": {"title": {"type": "string"}, "pinned": {"type": "boolean"}},
            "required": ["title", "pinned"],
        }
    ),
)


def _user(text: str) -> c.ChatMessage:
    return c.ChatMessage(role=c.ROLE_USER, content=[c.ContentBlock(text=c.TextBlock(text=text))])


async def _run(call: GenerateCall) -> list[pb.GenerateResponse]:
    return [event async for event in DemoAdapter(0).stream(Upstream("demo", "anthropic"), "", call)]


def _arguments(events: list[pb.GenerateResponse]) -> object:
    return json.loads(
        "".join(
            e.tool_call_arguments_delta.arguments_json_delta for e in events if e.HasField("tool_call_arguments_delta")
        )
    )


async def test_it_calls_a_tool_the_user_names_with_schema_shaped_arguments() -> None:
    events = await _run(GenerateCall(model="offline", messages=[_user("notes.create Groceries")], tools=[NOTES]))
    started = [e.tool_call_started for e in events if e.HasField("tool_call_started")]
    assert [s.name for s in started] == ["notes.create"]
    assert _arguments(events) == {"title": "Groceries", "pinned": False}  # the text after the tool's name
    assert events[-1].finished.stop_reason == pb.STOP_REASON_TOOL_USE
    # By its short name, with a colon; nothing after the name: the whole message.
    said = await _run(GenerateCall(model="offline", messages=[_user("please CREATE: milk, eggs")], tools=[NOTES]))
    assert _arguments(said) == {"title": "milk, eggs", "pinned": False}
    alone = await _run(GenerateCall(model="offline", messages=[_user("create")], tools=[NOTES]))
    assert _arguments(alone) == {"title": "create", "pinned": False}


async def test_it_answers_from_tool_results_and_otherwise_in_text() -> None:
    result = c.ChatMessage(
        role=c.ROLE_TOOL, content=[c.ContentBlock(tool_result=c.ToolResultBlock(tool_call_id="x", content='{"id": 7}'))]
    )
    events = await _run(GenerateCall(model="offline", messages=[_user("create a note"), result], tools=[NOTES]))
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert '{"id": 7}' in text
    assert "demo model" in text
    assert events[-1].finished.stop_reason == pb.STOP_REASON_END_TURN
    plain = await _run(GenerateCall(model="offline", messages=[_user("hello there")], tools=[NOTES]))
    assert not any(e.HasField("tool_call_started") for e in plain)
