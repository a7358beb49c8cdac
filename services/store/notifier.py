"""In-process wake-ups for live event streams.

A reader takes `waiter(run_id)` *before* it queries the log, then waits on it
only if the query found nothing new; an append after the query sets that very
event, so nothing appended at the seam is missed.
"""

from __future__ import annotations

import asyncio


class EventNotifier:
    """One asyncio.Event per run with readers; replaced after each notify."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def waiter(self, run_id: str) -> asyncio.Event:
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = asyncio.Event()
        return event

    def notify(self, run_id: str) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()
