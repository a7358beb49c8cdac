"""The first-token and idle timeouts on an adapter's stream (services.provider.timeouts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.provider.adapters.base import UpstreamError, accepted
from services.provider.timeouts import Timeouts, with_timeouts
from steward.provider.v1 import provider_service_pb2 as pb


def text(value: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(text_delta=pb.TextDelta(text=value))


class Source:
    """An adapter stand-in: yields (delay, event) pairs after their delays, and records being closed."""

    def __init__(self, *steps: tuple[float, pb.GenerateResponse]) -> None:
        self.steps = steps
        self.closed = False

    async def stream(self) -> AsyncIterator[pb.GenerateResponse]:
        try:
            for delay, event in self.steps:
                await asyncio.sleep(delay)
                yield event
        finally:
            self.closed = True


async def drain(source: Source, timeouts: Timeouts, pause: float = 0.0) -> list[str]:
    seen: list[str] = []
    async for event in with_timeouts(source.stream(), timeouts):
        seen.append(event.text_delta.text if event.HasField("text_delta") else str(event.WhichOneof("event")))
        await asyncio.sleep(pause)
    return seen


async def test_a_slow_reader_does_not_count_against_the_upstream() -> None:
    source = Source((0, text("a")), (0, text("b")), (0, text("c")))
    assert await drain(source, Timeouts(first_token=0.05, idle=0.05), pause=0.15) == ["a", "b", "c"]


async def test_a_stall_between_events_is_an_idle_timeout() -> None:
    source = Source((0, text("a")), (5, text("never")))
    with pytest.raises(UpstreamError) as raised:
        await asyncio.wait_for(drain(source, Timeouts(first_token=5, idle=0.1)), timeout=3)
    assert (raised.value.reason, raised.value.transient) == ("TIMEOUT", True)
    assert "next event within 0.1s" in raised.value.message
    assert source.closed


async def test_a_silent_upstream_is_a_first_token_timeout() -> None:
    source = Source((5, text("never")))
    with pytest.raises(UpstreamError) as raised:
        await asyncio.wait_for(drain(source, Timeouts(first_token=0.1, idle=5)), timeout=3)
    assert "first token within 0.1s" in raised.value.message
    assert source.closed


async def test_acceptance_restarts_the_first_token_wait_instead_of_ending_it() -> None:
    # Accepted at once, first text after 0.2 s: within the first-token limit (0.4 s), beyond the idle one (0.05 s).
    source = Source((0, accepted()), (0.2, text("a")), (0, text("b")))
    assert await drain(source, Timeouts(first_token=0.4, idle=0.05)) == ["attempt_started", "a", "b"]


async def test_a_cancelled_caller_is_cancelled_not_timed_out() -> None:
    source = Source((0, text("a")), (5, text("never")))
    task = asyncio.create_task(drain(source, Timeouts(first_token=5, idle=5)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed


async def test_a_timer_that_fires_early_rearms_for_the_current_deadline() -> None:
    # Events 0.1 s apart under a 0.15 s idle limit: the timer armed for the first wait fires during a later one,
    # before that wait's own deadline, and must re-arm rather than time out.
    source = Source(*((0.1, text(str(index))) for index in range(8)))
    assert await drain(source, Timeouts(first_token=0.15, idle=0.15)) == [str(index) for index in range(8)]
