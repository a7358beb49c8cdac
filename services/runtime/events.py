"""EventWriter: appends a run's events to the store, coalescing deltas.

The first text or reasoning delta of a run is written at once, in the
background while the stream goes on (fast first token); later deltas are
merged with the one before them (same step, same kind) and written at most
every `interval` seconds, or sooner when an event that must be written now
follows. Events that need not be written at once (`later`) ride with the next
write, or are written after `interval`. The buffered tail can be taken
(`drain`) to go into a checkpoint instead of a write of its own. Writes are
serialized, so the log keeps the order in which events were produced; a
background write that failed fails every write after it. A tap (the hooks'
event tap) sees each event once it is durable, with its seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc


class EventWriter:
    def __init__(
        self,
        runs: store_grpc.RunServiceAsyncStub,
        run_id: str,
        epoch: int,
        interval: float,
        tap: Callable[[ev.RunEvent], Awaitable[None]] | None = None,
    ) -> None:
        self._runs = runs
        self._tap = tap
        self._run_id = run_id
        self._epoch = epoch
        self._interval = interval
        self._pending: list[ev.RunEvent] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None  # a background write, scheduled
        self._writes: set[asyncio.Task[None]] = set()  # background writes in flight
        self._error: BaseException | None = None  # the first background write's failure
        self._delta_written = False
        self._batches = 0

    async def emit(self, event: ev.RunEvent) -> None:
        """Write an event (and what is buffered before it) now."""
        self._pending.append(event)
        await self.flush()

    def send(self, event: ev.RunEvent) -> None:
        """Write an event (and what is buffered before it) now, in the background: the caller goes on at once."""
        self._pending.append(event)
        self._write_in_background()

    def later(self, event: ev.RunEvent) -> None:
        """Buffer an event: it goes with the next write, or on its own after `interval`."""
        self._pending.append(event)
        self._arm()

    def text(self, step: int, text: str) -> None:
        """Buffer a text delta, merging it into the previous one of the same step."""
        self._delta(step, "text_delta", text)

    def reasoning(self, step: int, text: str) -> None:
        """Buffer a reasoning delta, merging it into the previous one of the same step."""
        self._delta(step, "reasoning_delta", text)

    def _delta(self, step: int, kind: str, text: str) -> None:
        last = self._pending[-1] if self._pending else None
        if last is not None and last.step == step and last.WhichOneof("payload") == kind:
            merged = last.text_delta if kind == "text_delta" else last.reasoning_delta
            merged.text += text
        elif kind == "text_delta":
            self._pending.append(ev.RunEvent(step=step, text_delta=ev.TextDelta(text=text)))
        else:
            self._pending.append(ev.RunEvent(step=step, reasoning_delta=ev.ReasoningDelta(text=text)))
        if not self._delta_written:
            self._delta_written = True
            self._write_in_background()  # the first token: written now, while the stream goes on
        else:
            self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._write_in_background)

    def _write_in_background(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.create_task(self.flush())
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()

    async def flush(self) -> None:
        """Write everything buffered, in order; a background write's failure is raised here."""
        async with self._lock:
            if self._error is not None:
                raise self._error
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            self._batches += 1
            # Keyed per holder and batch: a retried append after a timeout appends nothing twice.
            request_id = f"{self._run_id}/{self._epoch}/events/{self._batches}"
            reply = await self._runs.AppendRunEvents(
                store_pb.AppendRunEventsRequest(
                    run_id=self._run_id, lease_epoch=self._epoch, events=batch, request_id=request_id
                )
            )
            if self._tap is not None:
                for offset, event in enumerate(batch):
                    event.seq = reply.first_seq + offset
                    await self._tap(event)

    async def drain(self) -> list[ev.RunEvent]:
        """Take what is buffered and unwritten: the caller writes it (in a checkpoint), ahead of its own events."""
        await self._settle()
        async with self._lock:
            if self._error is not None:
                raise self._error
            batch, self._pending = self._pending, []
        return batch

    async def close(self) -> None:
        """Write what is left, and wait for the background writes."""
        await self._settle()
        await self.flush()

    async def _settle(self) -> None:
        """Cancel a scheduled background write; wait for those in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._writes:
            await asyncio.wait(set(self._writes))
