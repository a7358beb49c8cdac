"""First-token and idle timeouts on an adapter's event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.provider.adapters.base import ACCEPTED_KIND, UpstreamError
from steward.provider.v1 import provider_service_pb2 as pb


@dataclass(frozen=True)
class Timeouts:
    first_token: float = 60.0  # seconds for the upstream to accept the request, then again to its first event
    idle: float = 60.0  # seconds between two events


async def with_timeouts(
    events: AsyncIterator[pb.GenerateResponse], timeouts: Timeouts
) -> AsyncIterator[pb.GenerateResponse]:
    """The adapter's events, with the first-token (until the first event after ACCEPTED) and idle timeouts.

    One lazily re-armed timer per wait that outlives its deadline, not one timeout per event: the timer only
    checks, when it fires, whether the wait in progress has run past its deadline, and otherwise re-arms itself
    for the current deadline. Time spent suspended at `yield` (the caller writing) does not count.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    iterator = aiter(events)
    limit = timeouts.first_token
    deadline = 0.0
    waiting = expired = False
    timer: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal timer, expired
        timer = None
        if not waiting:
            return  # the next wait arms a new timer
        if loop.time() >= deadline:
            expired = True
            task.cancel()
        else:
            timer = loop.call_at(deadline, check)

    try:
        while True:
            deadline = loop.time() + limit
            waiting = True
            if timer is not None and timer.when() > deadline:  # a shorter limit now (idle after the first token)
                timer.cancel()
                timer = None
            if timer is None:
                timer = loop.call_at(deadline, check)
            try:
                event = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError as exc:
                if expired and task.uncancel() == 0:  # our timer's cancellation, and nobody else's
                    which = "first token" if limit == timeouts.first_token else "next event"
                    raise UpstreamError("TIMEOUT", f"no {which} within {limit:g}s", transient=True) from exc
                raise
            finally:
                waiting = False
            if event.WhichOneof("event") != ACCEPTED_KIND:
                limit = timeouts.idle
            yield event
    finally:
        if timer is not None:
            timer.cancel()
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()
