"""EventWriter: appends a run's events to the store, coalescing text deltas.

The first text delta of a run is written at once (fast first token); later
deltas are merged into one event and written at most every `interval` seconds,
or sooner when another kind of event follows. Writes are serialized, so the
log keeps the order in which events were produced. A tap (the hooks' event
tap) sees each event once it is durable, with its seq.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._timer: asyncio.Task[None] | None = None
        self._text_written = False
        self._batches = 0

    async def emit(self, event: ev.RunEvent) -> None:
        """Write an event (and any buffered text before it) now."""
        self._pending.append(event)
        await self.flush()

    async def text(self, step: int, text: str) -> None:
        """Buffer a text delta, merging it into the previous one of the same step."""
        last = self._pending[-1] if self._pending else None
        if last is not None and last.step == step and last.HasField("text_delta"):
            last.text_delta.text += text
        else:
            self._pending.append(ev.RunEvent(step=step, text_delta=ev.TextDelta(text=text)))
        if not self._text_written:
            self._text_written = True
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything buffered, in order."""
        async with self._lock:
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

    async def close(self) -> None:
        """Stop the timer and write what is left."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self.flush()
