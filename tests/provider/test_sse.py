"""The adapters' stream decoding: the SSE decoder and the merging of deltas that arrive together."""

from __future__ import annotations

import pytest

from services.provider.adapters.base import merge_deltas
from services.provider.adapters.sse import SseDecoder, SseEvent
from steward.provider.v1 import provider_service_pb2 as pb

STREAM = (
    b": keep-alive\r\n"
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"event: ping\rdata: {}\r\r"
    b"id: 7\nretry: 100\ndata: \xc3\xa9t\xc3\xa9\n\n"
)
EXPECTED = [
    SseEvent("message_start", '{"a": 1}'),
    SseEvent("", "line one\nline two"),
    SseEvent("ping", "{}"),
    SseEvent("", "été"),
]


def decode_in_pieces(data: bytes, size: int) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for start in range(0, len(data), size):
        events += decoder.feed(data[start : start + size])
    return events


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_events_decode_the_same_however_the_bytes_are_split(size: int) -> None:
    # Splits fall inside CRLF pairs, inside multi-byte UTF-8 characters and between an event and its blank line.
    assert decode_in_pieces(STREAM, size) == EXPECTED


def test_an_event_cut_off_by_the_end_of_the_stream_is_not_delivered() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: whole\n\ndata: cut off") == [SseEvent("", "whole")]


def test_a_line_that_is_not_utf8_is_an_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        SseDecoder().feed(b"data: \xff\xfe\n\n")


def text(value: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(text_delta=pb.TextDelta(text=value))


def arguments(index: int, value: str) -> pb.GenerateResponse:
    delta = pb.ToolCallArgumentsDelta(index=index, arguments_json_delta=value)
    return pb.GenerateResponse(tool_call_arguments_delta=delta)


def reasoning(value: str, signature: str = "") -> pb.GenerateResponse:
    return pb.GenerateResponse(reasoning_delta=pb.ReasoningDelta(text=value, signature=signature))


def test_runs_of_the_same_fragments_merge_in_order() -> None:
    usage = pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=pb.STOP_REASON_END_TURN))
    events = [
        reasoning("th"),
        reasoning("ink"),
        reasoning("", signature="sig"),
        text("Hel"),
        text("lo"),
        arguments(0, '{"a"'),
        arguments(0, ": 1}"),
        arguments(1, "{}"),
        text("!"),
        usage,
    ]
    assert merge_deltas(events) == [
        reasoning("think"),
        reasoning("", signature="sig"),
        text("Hello"),
        arguments(0, '{"a": 1}'),
        arguments(1, "{}"),
        text("!"),
        usage,
    ]


def test_nothing_to_merge_is_left_alone() -> None:
    events = [text("a"), arguments(0, "{}"), text("b")]
    assert merge_deltas(list(events)) == events
    assert merge_deltas([]) == []
