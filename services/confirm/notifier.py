"""In-process wake-ups for WatchDecisions streams.

A stream takes `waiter()` *before* it reads the feed and waits on it only when the read found
nothing new; a decision committed after the read sets that very event, so nothing put on the
feed at the seam is missed. Every decision wakes every stream (the feed is one sequence).
At shutdown the streams end with UNAVAILABLE / SHUTTING_DOWN when the server drains (steward.rpc.drain).
"""

from __future__ import annotations

import asyncio


class FeedNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()
