"""The event stream's decisions without I/O: frames, cut frames, duplicates, `error` events, the retry budget."""

from __future__ import annotations

import json

import pytest

from steward.client import NotFoundError, StewardConnectionError, StreamPolicy, UnavailableError
from steward.client.errors import parse_retry_after
from steward.client.stream import EventStream, StreamInterruptedError


def _frame(seq: int, kind: str = "text_delta") -> list[str]:
    body = {"seq": seq, "run_id": "r", "step": 1, "type": kind, "time": None, "data": {"text": str(seq)}}
    return [f"id: {seq}", f"event: {kind}", f"data: {json.dumps(body)}", ""]


def _feed(stream: EventStream, lines: list[str]) -> list[int]:
    return [event.seq for line in lines if (event := stream.feed(line)) is not None]


def test_a_frame_cut_by_a_dropped_connection_is_never_yielded_and_duplicates_are_skipped() -> None:
    stream = EventStream("r", 0, StreamPolicy())
    assert "Last-Event-ID" not in stream.headers()
    assert _feed(stream, [": ping", *_frame(1), *_frame(2)[:3]]) == [1]  # frame 2 lost its blank line
    assert stream.headers()["Last-Event-ID"] == "1"
    assert _feed(stream, [*_frame(1), *_frame(2), *_frame(3, "run_completed")]) == [2, 3]
    assert stream.done


def test_error_events_are_raised_by_class_or_resumed_when_transient() -> None:
    stream = EventStream("r", 0, StreamPolicy())
    problem = {"status": "NOT_FOUND", "reason": "RUN_NOT_FOUND", "detail": "no such run"}
    with pytest.raises(NotFoundError) as missing:
        _feed(stream, ["event: error", f"data: {json.dumps(problem)}", ""])
    assert (missing.value.status, missing.value.reason) == (404, "RUN_NOT_FOUND")
    problem = {"status": "UNAVAILABLE", "reason": "DEPENDENCY_UNAVAILABLE", "detail": "try again"}
    with pytest.raises(StreamInterruptedError):
        _feed(stream, ["event: error", f"data: {json.dumps(problem)}", ""])


def test_the_retry_budget_is_bounded_and_starts_again_with_each_new_event() -> None:
    stream = EventStream("r", 0, StreamPolicy(max_attempts=2, initial_backoff=0.01))
    assert stream.dropped(OSError("reset")) < 0.01
    assert stream.dropped(None) <= 0.02
    _feed(stream, _frame(1))  # progress
    stream.dropped(None)
    stream.dropped(None)
    with pytest.raises(StewardConnectionError, match="last seq 1"):
        stream.dropped(None)
    refusing = EventStream("r", 0, StreamPolicy(max_attempts=0))
    with pytest.raises(UnavailableError) as unavailable:
        refusing.refused(503, {"Retry-After": "2"}, b'{"reason": "DEPENDENCY_UNAVAILABLE", "detail": "down"}')
    assert unavailable.value.retry_after == 2.0
    with pytest.raises(NotFoundError):  # not worth a retry: raised even with budget left
        EventStream("r", 0, StreamPolicy()).refused(404, {}, b'{"reason": "RUN_NOT_FOUND", "detail": "no"}')


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
