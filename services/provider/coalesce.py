"""Coalescing a Generate stream: at most one message per window once content flows.

Every gRPC message costs both ends a fixed amount of CPU (about a third of the provider's at 32
concurrent streams), whatever it carries. Upstreams send a token every few milliseconds; the
runtime, the main reader, writes text to the run's log at most every 10 ms anyway. So, after the
first content event of a call has gone out at once, events that arrive within `window` seconds of
the last message are held until the window has passed and go out merged (`merge_deltas`, at most
`MAX_MESSAGE_BYTES` a message); an event that arrives later than that goes out at once. Nothing is
dropped or reordered, and the first token, the announcements before it, a stream slower than one
event per window, the `finished` event and the stream's end are never held.

The source is read by a task of its own, so that reading the upstream goes on while a message is
held (up to `MAX_HELD_EVENTS`: a caller that falls further behind slows the upstream down, as gRPC's
flow control did before); closing the coalesced stream (the caller went away) cancels that task,
which closes the source the way a cancelled call always did (its usage row is written as
cancelled). Whatever ends the reader, a cancel included, reaches the caller after the events before
it: a cut stream never ends as if it had finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.provider.adapters.base import merge_deltas
from services.provider.generate import CONTENT_EVENTS
from steward.provider.v1 import provider_service_pb2 as pb

MAX_HELD_EVENTS = 256  # the reader stops reading the upstream while this many wait for the caller
MAX_MESSAGE_BYTES = 256 * 1024  # events merged into one message, at most (one larger event still goes alone)


async def coalesced(source: AsyncIterator[pb.GenerateResponse], window: float) -> AsyncIterator[pb.GenerateResponse]:
    """`source`'s events, at most one message per `window` seconds once content has gone out (see above)."""
    if window <= 0:
        async for event in source:
            yield event
        return
    loop = asyncio.get_running_loop()
    buffer: list[pb.GenerateResponse] = []
    arrived = asyncio.Event()  # the buffer holds events
    urgent = asyncio.Event()  # the stream's `finished` event or its end is in: nothing waits any more
    room = asyncio.Event()  # the buffer has room
    room.set()
    ended = False
    failure: BaseException | None = None

    async def read() -> None:
        nonlocal ended, failure
        try:
            async for event in source:
                buffer.append(event)
                arrived.set()
                if event.WhichOneof("event") == "finished":
                    urgent.set()
                if len(buffer) >= MAX_HELD_EVENTS:  # the caller is behind: so is the upstream, until it catches up
                    room.clear()
                    await room.wait()
        except BaseException as exc:  # noqa: BLE001 - raised to the caller after what came before it (a cancel too)
            failure = exc
        finally:
            # Cancelled while waiting for room, the source is suspended at a yield: close it now, not when the
            # garbage collector gets to it (its cleanup writes the attempt's usage row).
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            ended = True
            urgent.set()
            arrived.set()

    reader = asyncio.create_task(read())
    last_sent = 0.0
    content_sent = False
    try:
        while True:
            await arrived.wait()
            hold = last_sent + window - loop.time()
            if content_sent and hold > 0 and not urgent.is_set():
                # More arrives meanwhile and goes in the same message; `finished` or the end cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(hold):
                        await urgent.wait()
            arrived.clear()  # no await from here to the batch taken: nothing that arrives can be missed
            batch = _take(buffer)
            if buffer:
                arrived.set()  # what did not fit in this message goes in the next
            room.set()
            for event in merge_deltas(batch):
                content_sent = content_sent or event.WhichOneof("event") in CONTENT_EVENTS
                yield event
            if batch:
                last_sent = loop.time()
            if ended and not buffer:
                if failure is not None:
                    raise failure
                return
    finally:
        reader.cancel()  # closes the source, as a cancelled call always did (its usage row says cancelled)
        try:
            await reader
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled: that goes on
            # else: the reader was cancelled before it began; the source never started


def _take(buffer: list[pb.GenerateResponse]) -> list[pb.GenerateResponse]:
    """The events at the head of `buffer` that fit one message (at least one), taken out of it."""
    if len(buffer) == 1:  # the usual case once the caller keeps up: no sizes to add
        return [buffer.pop()]
    size = 0
    for index, event in enumerate(buffer):
        size += event.ByteSize()
        if size > MAX_MESSAGE_BYTES and index > 0:
            batch = buffer[:index]
            del buffer[:index]
            return batch
    batch = buffer[:]
    del buffer[:]
    return batch
