"""`AsyncClient` against the real stack: every call of the slice, and errors by status and reason."""

from __future__ import annotations

from datetime import datetime

import pytest

from steward.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    ClientTool,
    ConflictError,
    Limits,
    NotFoundError,
    RunEvent,
    StewardAPIError,
    ToolResult,
)
from tests.support.stack import Stack, runtime_confirmation

LOOKUP = ClientTool(
    "lookup",
    "Looks a thing up.",
    {"type": "object", "properties": {"thing": {"type": "string"}}, "required": ["thing"]},
)


async def _events(client: AsyncClient, run_id: str, after: int = 0) -> list[RunEvent]:
    return [event async for event in client.runs.events(run_id, after=after)]


async def test_a_conversation_is_created_read_and_listed_page_by_page(client: AsyncClient) -> None:
    made = [await client.conversations.create(f"paging {index}") for index in range(3)]
    assert (await client.conversations.get(made[0].id)) == made[0]
    assert made[0].title == "paging 0"
    assert made[0].create_time is not None
    first = await client.conversations.page(page_size=2)
    assert len(first.items) == 2
    assert first.next_page_token is not None
    listed = [conversation.id async for conversation in client.conversations.list(page_size=2)]
    assert len(listed) == len(set(listed))
    assert {c.id for c in made} <= set(listed)


async def test_a_message_starts_a_run_whose_events_end_and_whose_answer_is_stored(client: AsyncClient) -> None:
    conversation = await client.conversations.create("hello")
    started = await client.messages.post(conversation.id, "Hello, client")
    assert (started.existed, started.run.conversation_id) == (False, conversation.id)
    assert started.events_url == f"/api/v1/runs/{started.run.id}/events"
    events = await _events(client, started.run.id)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert events[0].type == "run_started"
    assert events[-1].type == "run_completed"
    assert events[-1].is_end
    streamed = "".join(event.data["text"] for event in events if event.type == "text_delta")
    assert "Hello, client" in streamed
    assert await _events(client, started.run.id, after=3) == events[3:]  # a resume from a seq
    messages = [message async for message in client.messages.list(conversation.id)]
    assert [(m.role, m.run_id) for m in messages] == [("user", started.run.id), ("assistant", started.run.id)]
    assert messages[0].text == "Hello, client"
    assert messages[1].text == streamed
    run = await client.runs.get(started.run.id)
    assert (run.state, run.ended, run.last_event_seq) == ("completed", True, events[-1].seq)
    assert run.usage.output_tokens > 0


async def test_runs_are_created_listed_and_cancelled(client: AsyncClient) -> None:
    conversation = await client.conversations.create("runs")
    limits = Limits(max_steps=3)
    first = await client.runs.create(conversation.id, "one", limits=limits, idempotency_key="client-runs-1")
    again = await client.runs.create(conversation.id, "one", limits=limits, idempotency_key="client-runs-1")
    assert (again.existed, again.run.id) == (True, first.run.id)
    assert first.run.limits.max_steps == 3
    await _events(client, first.run.id)
    listed = [run.id async for run in client.runs.list(conversation_id=conversation.id, page_size=1)]
    assert listed == [first.run.id]
    cancelled = await client.runs.cancel(first.run.id)  # an ended run is returned unchanged
    assert (cancelled.id, cancelled.state) == (first.run.id, "completed")


async def test_a_client_tool_call_is_answered_while_the_stream_follows_the_run(client: AsyncClient) -> None:
    conversation = await client.conversations.create("client tools")
    started = await client.runs.create(conversation.id, "What is lookup of gold?", client_tools=[LOOKUP])
    assert [tool.name for tool in started.run.client_tools] == ["client.lookup"]  # namespaced by the runtime
    seen: list[RunEvent] = []
    async for event in client.runs.events(started.run.id):
        seen.append(event)
        if event.type == "run_paused":
            (requested,) = [e.data for e in seen if e.type == "client_tool_requested"]
            paused = await client.runs.get(started.run.id)
            assert paused.pause_reason == "awaiting_client_tool"
            assert paused.pause_expire_time is not None  # the deployment's default deadline for client tools
            assert paused.pause_expire_time == datetime.fromisoformat(event.data["expire_time"])
            result = ToolResult(requested["tool_call_id"], "gold is a metal")
            resumed = await client.runs.submit_tool_results(started.run.id, [result])
            assert resumed.id == started.run.id
    assert seen[-1].type == "run_completed"
    (finished,) = [e.data for e in seen if e.type == "tool_call_finished"]
    assert finished["result"] == "gold is a metal"


async def test_a_confirmation_is_listed_read_and_decided_once(stack: Stack, client: AsyncClient) -> None:
    made = await runtime_confirmation(stack)
    pending = [c async for c in client.confirmations.list(run_id=made.run_id)]
    assert [c.id for c in pending] == [made.id]
    shown = await client.confirmations.get(made.id)
    assert (shown.state, shown.tool_name, shown.arguments) == ("pending", "notes.create_note", {"title": "Groceries"})
    decided = await client.confirmations.decide(
        made.id, "approve", reason="fine", expected_arguments_hash=shown.arguments_hash
    )
    assert decided.state == "approved"
    assert decided.decision is not None
    assert (decided.decision.outcome, decided.decision.surface) == ("approve", "api")
    assert [c.id for c in (await client.confirmations.page(state="all", run_id=made.run_id)).items] == [made.id]
    with pytest.raises(ConflictError) as refused:
        await client.confirmations.decide(made.id, "reject")
    assert (refused.value.status, refused.value.reason) == (409, "CONFIRMATION_ALREADY_DECIDED")


async def test_unknown_resources_are_not_found_with_their_reason_and_request_id(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as conversation:
        await client.conversations.get("no-such-conversation")
    assert (conversation.value.status, conversation.value.reason) == (404, "CONVERSATION_NOT_FOUND")
    assert conversation.value.request_id
    with pytest.raises(NotFoundError) as run:
        await client.runs.get("no-such-run")
    assert run.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(NotFoundError) as confirmation:
        await client.confirmations.get("no-such-confirmation")
    assert confirmation.value.reason == "CONFIRMATION_NOT_FOUND"


async def test_a_bad_request_names_the_field(client: AsyncClient) -> None:
    conversation = await client.conversations.create("bad")
    with pytest.raises(BadRequestError) as refused:
        await client.runs.create(conversation.id, "hi", mode="sometimes")
    assert (refused.value.status, refused.value.reason, refused.value.field) == (400, "INVALID_ARGUMENT", "mode")
    assert "mode" in refused.value.detail
    with pytest.raises(BadRequestError) as long_title:
        await client.conversations.create("x" * 501)
    assert (long_title.value.reason, long_title.value.field) == ("INVALID_ARGUMENT", "title")


@pytest.mark.parametrize(("token", "reason"), [("not-a-token", "TOKEN_INVALID"), ("", "TOKEN_MISSING")])
async def test_a_bad_or_missing_token_is_an_authentication_error(
    base_url: str, monkeypatch: pytest.MonkeyPatch, token: str, reason: str
) -> None:
    monkeypatch.delenv("STEWARD_TOKEN", raising=False)
    async with AsyncClient(base_url, token) as stranger:
        with pytest.raises(AuthenticationError) as refused:
            await stranger.conversations.page()
    assert (refused.value.status, refused.value.reason) == (401, reason)
    assert isinstance(refused.value, StewardAPIError)
