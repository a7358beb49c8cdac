"""Coalescing a Generate stream (services/provider/coalesce.py): the first content at once, later events within the
window merged, nothing dropped, reordered or held past the stream's end, failures after what came before them, and
a closed stream closes its source."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from services.provider.coalesce import MAX_HELD_EVENTS, coalesced
from services.provider.settings import ProviderSettings
from steward.provider.v1 import provider_service_pb2 as pb

WINDOW = 0.2  # seconds: wide, so that timing on a loaded machine cannot blur which events share a message


def text(value: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(text_delta=pb.TextDelta(text=value))


def started() -> pb.GenerateResponse:
    return pb.GenerateResponse(attempt_started=pb.AttemptStarted(attempt=1))


async def paced(*items: tuple[float, pb.GenerateResponse]) -> AsyncIterator[pb.GenerateResponse]:
    """Each event after sleeping its delay."""
    for delay, event in items:
        await asyncio.sleep(delay)
        yield event


async def received(stream: AsyncIterator[pb.GenerateResponse]) -> list[tuple[float, str]]:
    """(seconds since the start, what the message holds) per message."""
    start = time.monotonic()
    out = []
    async for event in stream:
        kind = event.WhichOneof("event")
        out.append((time.monotonic() - start, f"text:{event.text_delta.text}" if kind == "text_delta" else str(kind)))
    return out


async def test_a_zero_window_passes_every_event_through() -> None:
    events = [started(), text("a"), text("b"), text("c")]
    got = [e async for e in coalesced(paced(*((0.0, e) for e in events)), 0)]
    assert got == events


async def test_the_first_content_goes_at_once_and_later_events_within_the_window_are_merged() -> None:
    source = paced(
        (0.0, started()),
        (0.0, text("a")),
        (0.01, text("b")),
        (0.01, text("c")),
        (0.01, text("d")),
        (WINDOW * 2, text("e")),  # the stream goes on: the hold runs its whole window
    )
    messages = await received(coalesced(source, WINDOW))
    assert [what for _, what in messages] == ["attempt_started", "text:a", "text:bcd", "text:e"]
    first_text_at = messages[1][0]
    assert first_text_at < WINDOW / 2  # not held
    # b, c and d came 10-30 ms after a, within the window: they waited for its end and went as one message.
    assert WINDOW * 0.8 < messages[2][0] - first_text_at < WINDOW * 1.5


async def test_events_further_apart_than_the_window_go_as_they_come() -> None:
    source = paced((0.0, text("a")), (WINDOW * 1.5, text("b")), (WINDOW * 1.5, text("c")))
    messages = await received(coalesced(source, WINDOW))
    assert [what for _, what in messages] == ["text:a", "text:b", "text:c"]
    assert messages[2][0] - messages[1][0] == pytest.approx(WINDOW * 1.5, abs=WINDOW / 2)


async def test_the_end_of_the_stream_is_not_held() -> None:
    done = pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=pb.STOP_REASON_END_TURN))
    source = paced((0.0, text("a")), (0.0, text("b")), (0.0, done))
    start = time.monotonic()
    events = [event async for event in coalesced(source, WINDOW)]
    assert time.monotonic() - start < WINDOW / 2
    assert "".join(e.text_delta.text for e in events) == "ab"
    assert events[-1].WhichOneof("event") == "finished"


async def test_the_finished_event_is_not_held_while_the_source_finishes_its_work() -> None:
    async def source() -> AsyncIterator[pb.GenerateResponse]:
        yield text("a")
        await asyncio.sleep(0.01)
        yield text("b")
        yield pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=pb.STOP_REASON_END_TURN))
        await asyncio.sleep(WINDOW * 3)  # the provider writes its usage row after the last event

    messages = await received(coalesced(source(), WINDOW))
    assert [what for _, what in messages] == ["text:a", "text:b", "finished"]
    assert messages[2][0] < WINDOW / 2  # b and finished went at once, not after the window


async def test_a_failure_comes_after_everything_before_it() -> None:
    async def failing() -> AsyncIterator[pb.GenerateResponse]:
        yield text("a")
        await asyncio.sleep(0.01)
        yield text("b")
        raise RuntimeError("upstream cut")

    got: list[str] = []

    async def read() -> None:
        async for event in coalesced(failing(), WINDOW):
            got.append(event.text_delta.text)

    with pytest.raises(RuntimeError, match="upstream cut"):
        await read()
    assert "".join(got) == "ab"


async def test_a_source_ended_by_a_cancel_is_not_taken_for_a_finished_stream() -> None:
    async def cancelled() -> AsyncIterator[pb.GenerateResponse]:
        yield text("a")
        raise asyncio.CancelledError  # as when the loop shuts the reader down

    got: list[str] = []

    async def read() -> None:
        async for event in coalesced(cancelled(), WINDOW):
            got.append(event.text_delta.text)

    with pytest.raises(asyncio.CancelledError):
        await read()
    assert got == ["a"]


def endless(closed: asyncio.Event, counter: list[int] | None = None) -> AsyncIterator[pb.GenerateResponse]:
    async def events() -> AsyncIterator[pb.GenerateResponse]:
        try:
            while True:
                if counter is not None:
                    counter[0] += 1
                yield text("x")
                await asyncio.sleep(0 if counter is not None else 0.01)
        finally:
            closed.set()  # where the provider writes a cancelled attempt's usage row

    return events()


async def test_closing_the_stream_closes_its_source() -> None:
    closed = asyncio.Event()
    stream = coalesced(endless(closed), WINDOW)
    first = await anext(stream)
    assert first.text_delta.text == "x"
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()  # closed before aclose returned, not later by the garbage collector


async def test_closing_the_stream_before_any_content_closes_its_source() -> None:
    closed = asyncio.Event()

    async def announced_then_silent() -> AsyncIterator[pb.GenerateResponse]:
        try:
            yield started()
            await asyncio.sleep(60)
            yield text("never")
        finally:
            closed.set()

    stream = coalesced(announced_then_silent(), WINDOW)
    assert (await anext(stream)).WhichOneof("event") == "attempt_started"
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()


async def test_a_failure_before_any_content_reaches_the_caller_after_the_announcement() -> None:
    async def refused() -> AsyncIterator[pb.GenerateResponse]:
        yield started()
        raise RuntimeError("refused upstream")

    stream = coalesced(refused(), WINDOW)
    assert (await anext(stream)).WhichOneof("event") == "attempt_started"
    with pytest.raises(RuntimeError, match="refused upstream"):
        await anext(stream)


async def test_cancelling_the_caller_closes_the_source() -> None:
    closed = asyncio.Event()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in coalesced(endless(closed), WINDOW):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()


async def test_a_caller_that_falls_behind_slows_the_source_down() -> None:
    closed = asyncio.Event()
    produced = [0]
    stream = coalesced(endless(closed, produced), WINDOW)
    await anext(stream)  # then nothing is read for a while
    await asyncio.sleep(0.2)
    assert produced[0] <= MAX_HELD_EVENTS + 2
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()


@pytest.mark.parametrize("window", [-0.001, 1.5])
def test_a_window_outside_0_to_1_second_is_refused_at_start_up(window: float) -> None:
    with pytest.raises(ValidationError, match="coalesce_window"):
        ProviderSettings.model_validate({"internal_secret": "s" * 43, "coalesce_window": window})
