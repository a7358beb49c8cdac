"""`Client` (blocking) against the real stack. Its calls run in a worker thread: the gateway serves from this
test's event loop, which a blocking call made on it would stall."""

from __future__ import annotations

import asyncio
import socket

import pytest

from steward.client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    RunEvent,
    StewardConnectionError,
)
from tests.support.stack import Stack, runtime_confirmation


async def test_the_blocking_client_makes_the_same_calls(base_url: str, stack: Stack) -> None:
    def scenario() -> tuple[list[RunEvent], list[str], str | None]:
        with Client(base_url, stack.dev_token) as steward:
            conversation = steward.conversations.create("blocking")
            assert steward.conversations.get(conversation.id) == conversation
            assert conversation.id in {c.id for c in steward.conversations.list(page_size=2)}
            started = steward.messages.post(conversation.id, "Hello, blocking client")
            events = list(steward.runs.events(started.run.id))
            assert list(steward.runs.events(started.run.id, after=2)) == events[2:]
            roles = [str(message.role) for message in steward.messages.list(conversation.id)]
            runs = [run.id for run in steward.runs.list(conversation_id=conversation.id)]
            assert runs == [started.run.id]
            assert steward.runs.cancel(started.run.id).state == "completed"
            return events, roles, steward.runs.get(started.run.id).state

    events, roles, state = await asyncio.to_thread(scenario)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert (events[-1].type, state) == ("run_completed", "completed")
    assert roles == ["user", "assistant"]


async def test_the_blocking_client_decides_a_confirmation_once(base_url: str, stack: Stack) -> None:
    made = await runtime_confirmation(stack)

    def scenario() -> tuple[str | None, int, str]:
        with Client(base_url, stack.dev_token) as steward:
            assert [c.id for c in steward.confirmations.list(run_id=made.run_id)] == [made.id]
            shown = steward.confirmations.get(made.id)
            decided = steward.confirmations.decide(made.id, "reject", expected_arguments_hash=shown.arguments_hash)
            with pytest.raises(ConflictError) as refused:
                steward.confirmations.decide(made.id, "approve")
            return decided.state, refused.value.status, refused.value.reason

    assert await asyncio.to_thread(scenario) == ("rejected", 409, "CONFIRMATION_ALREADY_DECIDED")


async def test_the_blocking_client_raises_errors_by_status_and_reason(base_url: str, stack: Stack) -> None:
    def scenario() -> list[tuple[type[Exception], int, str, str | None]]:
        found: list[tuple[type[Exception], int, str, str | None]] = []
        with Client(base_url, stack.dev_token) as steward:
            for call in (
                lambda: steward.runs.get("no-such-run"),
                lambda: steward.conversations.create("x" * 501),
                lambda: list(steward.runs.events("no-such-run")),
            ):
                try:
                    call()
                except (NotFoundError, BadRequestError) as error:
                    found.append((type(error), error.status, error.reason, error.field))
        with Client(base_url, "not-a-token") as stranger:
            try:
                stranger.runs.page()
            except AuthenticationError as error:
                found.append((type(error), error.status, error.reason, error.field))
        return found

    assert await asyncio.to_thread(scenario) == [
        (NotFoundError, 404, "RUN_NOT_FOUND", None),
        (BadRequestError, 400, "INVALID_ARGUMENT", "title"),
        (NotFoundError, 404, "RUN_NOT_FOUND", None),
        (AuthenticationError, 401, "TOKEN_INVALID", None),
    ]


async def test_an_unreachable_gateway_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def scenario() -> None:
        with Client(f"http://127.0.0.1:{port}", "token", timeout=2) as steward:
            steward.conversations.page()

    with pytest.raises(StewardConnectionError):
        await asyncio.to_thread(scenario)
