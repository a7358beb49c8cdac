"""Coalescing a Generate stream: at most one message per window once content flows.

Every gRPC message costs both ends a fixed amount of CPU (about a third of the provider's at 32
concurrent streams), whatever it carries. Upstreams send a token every few milliseconds; the
runtime, the main reader, writes text to the run's log at most every 10 ms anyway. So, after the
first content event of a call has gone out at once, events that arrive within `window` seconds of
the last message are held until the window has passed and go out merged (`merge_deltas`); an event
that arrives later than that goes out at once. Nothing is dropped or reordered, and the first
token, the announcements before it, a stream slower than one event per window and the stream's end
are never delayed.

The source is read by a task of its own, so that reading the upstream goes on while a message is
held; closing the coalesced stream (the caller went away) cancels that task, which closes the source
the way a cancelled call always did (its usage row is written as cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.provider.adapters.base import merge_deltas
from steward.provider.v1 import provider_service_pb2 as pb

CONTENT_EVENTS = frozenset(
    {"text_delta", "reasoning_delta", "tool_call_started", "tool_call_arguments_delta", "tool_call_finished"}
)


async def coalesced(source: AsyncIterator[pb.GenerateResponse], window: float) -> AsyncIterator[pb.GenerateResponse]:
    """`source`'s events, at most one message per `window` seconds once content has gone out (see above)."""
    if window <= 0:
        async for event in source:
            yield event
        return
    loop = asyncio.get_running_loop()
    buffer: list[pb.GenerateResponse] = []
    arrived = asyncio.Event()
    ended = asyncio.Event()
    failure: BaseException | None = None

    async def read() -> None:
        nonlocal failure
        try:
            async for event in source:
                buffer.append(event)
                arrived.set()
        except Exception as exc:  # noqa: BLE001 - raised to the reader after what came before it
            failure = exc
        finally:
            ended.set()
            arrived.set()

    reader = asyncio.create_task(read())
    last_sent = 0.0
    content_sent = False
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            hold = last_sent + window - loop.time()
            if content_sent and hold > 0 and not ended.is_set():
                # More arrives meanwhile and goes in the same message; the stream's end cuts the hold short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(hold):
                        await ended.wait()
            batch = buffer[:]
            del buffer[:]
            for event in merge_deltas(batch):
                content_sent = content_sent or event.WhichOneof("event") in CONTENT_EVENTS
                yield event
            if batch:
                last_sent = loop.time()
            if ended.is_set() and not buffer:
                if failure is not None:
                    raise failure
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
