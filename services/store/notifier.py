"""In-process wake-ups and a bounded tail cache for live event streams.

A reader takes `waiter(run_id)` *before* it reads, then waits on it only if
the read found nothing new; a write after the read sets that very event, so
nothing appended at the seam is missed.

Appends on this replica also `publish` their committed events. A live reader
whose cursor is exactly at the start of what was published takes the events
from memory instead of re-reading the database; a gap (a concurrent append
published out of order, an eviction, or a write on another replica) makes it
read the database as usual. The cache is bounded: at most `max_events` per run
and `max_runs` runs, least recently written first out.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from steward.store.v1 import run_event_pb2


class EventNotifier:
    def __init__(self, max_runs: int = 256, max_events: int = 256) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._recent: OrderedDict[str, dict[int, run_event_pb2.RunEvent]] = OrderedDict()
        self._max_runs = max_runs
        self._max_events = max_events

    def waiter(self, run_id: str) -> asyncio.Event:
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = asyncio.Event()
        return event

    def notify(self, run_id: str) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    def publish(self, run_id: str, events: Sequence[run_event_pb2.RunEvent]) -> None:
        """Remember committed events (with their seqs) and wake the run's readers."""
        recent = self._recent.pop(run_id, None) or {}
        self._recent[run_id] = recent
        for event in events:
            recent[event.seq] = event
        while len(recent) > self._max_events:
            del recent[min(recent)]
        while len(self._recent) > self._max_runs:
            self._recent.popitem(last=False)
        self.notify(run_id)

    def forget(self, run_id: str) -> None:
        """Drop a run's cached tail (its log changed in a way the cache does not mirror)."""
        self._recent.pop(run_id, None)

    def after(self, run_id: str, seq: int) -> list[run_event_pb2.RunEvent]:
        """Cached events seq+1, seq+2, ... with no gap; empty if seq+1 is not cached."""
        recent = self._recent.get(run_id)
        found: list[run_event_pb2.RunEvent] = []
        if recent is None:
            return found
        while (event := recent.get(seq + 1 + len(found))) is not None:
            found.append(event)
        return found
