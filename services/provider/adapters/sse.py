"""An incremental text/event-stream decoder (the WHATWG "event stream interpretation").

The adapters let the SDK send the request and check its status, then read the
streamed body themselves: `feed` takes whatever bytes one read returned and
gives back every event those bytes completed, so that events that piled up
while the provider was busy are handled as one batch (see `merge_deltas`)
instead of one await, one translation and one gRPC message each.

Lines end with CRLF, LF or CR, also split across reads. `id` and `retry`
fields are ignored (the upstreams' streams are not resumable); an event cut
off by the end of the stream is dropped, as the standard says.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    name: str  # the `event:` field; "" when the event named none
    data: str  # the `data:` lines, joined with "\n"


class SseDecoder:
    def __init__(self) -> None:
        self._partial = b""  # an unfinished line (or a lone trailing CR that may be half of a CRLF)
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by `chunk`; raises UnicodeDecodeError for a line that is not UTF-8."""
        buffer = self._partial + chunk
        held_cr = buffer.endswith(b"\r")
        if held_cr:
            buffer = buffer[:-1]
        lines = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._partial = lines.pop() + (b"\r" if held_cr else b"")
        events: list[SseEvent] = []
        for raw in lines:
            if not raw:
                if self._data or self._name:
                    events.append(SseEvent(self._name, "\n".join(self._data)))
                self._name, self._data = "", []
                continue
            line = raw.decode("utf-8")
            if line.startswith(":"):
                continue  # a comment (keep-alive)
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._name = value
        return events
