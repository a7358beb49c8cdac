"""The live-stream tail cache: only gap-free runs of committed events are served from memory."""

from __future__ import annotations

import asyncio

from services.store.notifier import EventNotifier
from steward.store.v1 import run_event_pb2 as ev


def _events(*seqs: int) -> list[ev.RunEvent]:
    return [ev.RunEvent(run_id="r", seq=seq, text_delta=ev.TextDelta(text=str(seq))) for seq in seqs]


def test_serves_a_contiguous_tail_and_nothing_across_a_gap() -> None:
    notifier = EventNotifier()
    notifier.publish("r", _events(5, 6))
    notifier.publish("r", _events(8))  # 7 was committed by a concurrent append not yet published
    assert [e.seq for e in notifier.after("r", 4)] == [5, 6]
    assert notifier.after("r", 6) == []  # the reader must go to the database for 7
    notifier.publish("r", _events(7))
    assert [e.seq for e in notifier.after("r", 6)] == [7, 8]
    assert notifier.after("r", 3) == []  # 4 was never published here
    assert notifier.after("other", 0) == []


def test_is_bounded_per_run_and_in_runs() -> None:
    notifier = EventNotifier(max_runs=2, max_events=3)
    notifier.publish("a", _events(1, 2, 3, 4))
    assert notifier.after("a", 0) == []  # 1 was evicted
    assert [e.seq for e in notifier.after("a", 1)] == [2, 3, 4]
    notifier.publish("b", _events(1))
    notifier.publish("c", _events(1))
    assert notifier.after("a", 1) == []  # least recently written run evicted
    assert [e.seq for e in notifier.after("c", 0)] == [1]
    notifier.forget("c")
    assert notifier.after("c", 0) == []


async def test_publish_and_notify_wake_the_current_waiter() -> None:
    notifier = EventNotifier()
    first = notifier.waiter("r")
    notifier.publish("r", _events(1))
    assert first.is_set()
    second = notifier.waiter("r")
    assert second is not first
    assert not second.is_set()
    notifier.notify("r")
    await asyncio.wait_for(second.wait(), 1)
