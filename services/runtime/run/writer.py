"""EventWriter: every write a claim makes to its run, in order, most of them behind the loop.

The claim's event appends and checkpoints are queued and sent by one task, in
the order the loop made them; whatever queued up while a write was on its way
goes in the next one, merged into a single CheckpointRun (group commit, within
a size limit). Two writes go around the queue, after settling it: events
appended once per key across claims (confirmations.append_once) and a claim's
last write when it ends badly (loop.py). Most writes are not awaited: the loop
goes on (calls the model, runs a read tool) while its writes are on their way,
and waits for them (`settle`) only before what cannot be repeated or must not
come first: a write tool, a confirmation, a client tool request, a pause, the
run's end. A crash in between costs at most a step or a read done again, from
the last durable checkpoint (ADR 0009).

Deltas are coalesced: the first delta of a run (text, reasoning, or a piece
of a tool call's arguments) is written at once, in the background (fast first
token); later ones are merged with the one before them (same step, same kind:
text with text, reasoning with reasoning, argument pieces of the same tool call
with each other) and written at most every `interval` seconds, or with the
next write. Events that need not be written at once
(`later`) ride with the next write, or are written after `interval`. A
checkpoint takes what is buffered ahead of its own events instead of a write
of its own.

A write the store could not take because it was away (outage.py) is tried
again, with backoff, for up to the outage bound: the loop goes on meanwhile
and what waits for the write waits. A write that failed fails every write after it (raised at the next call), so
a fenced or cut-off claim stops instead of writing around a hole. After a
write that ends or pauses the run, the writer takes no other. A tap (the
hooks' event tap) sees each event once it is durable, with its seq, before
whoever waits for the write goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from services.runtime.run import outage
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc

# A merged write stays well within gRPC's message limit and the store's events per call; a single write larger
# than this still goes (alone), as it would have without merging.
MAX_MERGED_BYTES = 2 * 1024 * 1024
MAX_MERGED_EVENTS = 500

log = structlog.get_logger(__name__)


@dataclass
class _Write:
    request: store_pb.CheckpointRunRequest
    done: asyncio.Future[store_pb.CheckpointRunResponse]


class EventWriter:
    def __init__(
        self,
        runs: store_grpc.RunServiceAsyncStub,
        run_id: str,
        epoch: int,
        interval: float,
        tap: Callable[[ev.RunEvent], Awaitable[None]] | None = None,
        running_ms: Callable[[], int] | None = None,
    ) -> None:
        self._runs = runs
        self._tap = tap
        self._running_ms = running_ms  # the run's running time so far, stamped on every write
        self._run_id = run_id
        self._epoch = epoch
        self._interval = interval
        self._pending: list[ev.RunEvent] = []  # buffered events, not yet in a write
        self._queue: list[_Write] = []  # writes made, not yet sent
        self._sender: asyncio.Task[None] | None = None  # sends the queue, one (merged) write at a time
        self._timer: asyncio.TimerHandle | None = None  # a write of the buffer, scheduled
        self._error: BaseException | None = None  # the first write's failure
        self._delta_written = False
        self._writes = 0
        self.last_write_made = False  # a write that ends or pauses the run is queued: the claim writes nothing after

    async def emit(self, event: ev.RunEvent) -> None:
        """Write an event (and what is buffered before it) now, and wait until it is durable."""
        self._check()
        self._pending.append(event)
        await self._write(store_pb.CheckpointRunRequest())

    def send(self, event: ev.RunEvent) -> None:
        """Write an event (and what is buffered before it) now, in the background: the caller goes on at once."""
        self._check()
        self._pending.append(event)
        self._write(store_pb.CheckpointRunRequest())

    def later(self, event: ev.RunEvent) -> None:
        """Buffer an event: it goes with the next write, or on its own after `interval`."""
        self._check()
        self._pending.append(event)
        self._arm()

    def text(self, step: int, text: str) -> None:
        """Buffer a text delta, merging it into the previous one of the same step."""
        self._delta(step, "text_delta", text)

    def reasoning(self, step: int, text: str) -> None:
        """Buffer a reasoning delta, merging it into the previous one of the same step."""
        self._delta(step, "reasoning_delta", text)

    def tool_arguments(self, step: int, tool_call_id: str, tool_name: str, piece: str) -> None:
        """Buffer a piece of a tool call's arguments (a text delta with `tool_call` set), merging it into the
        previous one of the same call and step."""
        self._check()
        last = self._pending[-1] if self._pending else None
        if (
            last is not None
            and last.step == step
            and last.WhichOneof("payload") == "text_delta"
            and last.text_delta.HasField("tool_call")
            and last.text_delta.tool_call.tool_call_id == tool_call_id
        ):
            last.text_delta.tool_call.arguments_json_delta += piece
        else:
            call = ev.ToolCallDelta(tool_call_id=tool_call_id, tool_name=tool_name, arguments_json_delta=piece)
            self._pending.append(ev.RunEvent(step=step, text_delta=ev.TextDelta(tool_call=call)))
        self._delta_buffered()

    def checkpoint_soon(self, request: store_pb.CheckpointRunRequest) -> asyncio.Future[store_pb.CheckpointRunResponse]:
        """Queue a checkpoint behind the writes before it, with what is buffered ahead of its own events; await the
        future (or `settle`) to know it is durable."""
        self._check()
        return self._write(request)

    async def checkpoint(self, request: store_pb.CheckpointRunRequest) -> store_pb.CheckpointRunResponse:
        """`checkpoint_soon`, waited for."""
        return await self.checkpoint_soon(request)

    async def flush(self) -> None:
        """Write what is buffered, behind the writes before it, and wait until it is durable."""
        self._check()
        if self._pending:
            await self._write(store_pb.CheckpointRunRequest())

    async def settle(self) -> None:
        """Make every write made so far durable: write what is buffered, wait for the queue; raise the first
        failure."""
        await self.flush()
        while self._sender is not None:
            await asyncio.shield(self._sender)
        self._check()

    async def abandon(self) -> list[ev.RunEvent]:
        """For a claim that is ending badly: let the queued writes land (or fail), and take what is buffered,
        unwritten; nothing once a write failed (what came after it would follow a hole in the log)."""
        self._cancel_timer()
        while self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._sender)
        batch, self._pending = self._pending, []
        return [] if self._error is not None else batch

    @property
    def error(self) -> BaseException | None:
        """The write failure that stopped the writer (None while it works): the store's error, not the caller's."""
        return self._error

    def close(self) -> None:
        """The claim is over: no timer fires, no write is taken any more."""
        self._cancel_timer()
        self._error = self._error or RuntimeError("the claim is over")

    def _write(self, request: store_pb.CheckpointRunRequest) -> asyncio.Future[store_pb.CheckpointRunResponse]:
        if self.last_write_made:
            raise RuntimeError("the claim's last write (an end or a pause) was already made")
        self.last_write_made = request.state not in (run_pb2.RUN_STATE_UNSPECIFIED, run_pb2.RUN_STATE_RUNNING)
        self._cancel_timer()  # what the timer would write goes with this write
        if self._pending:
            events = [*self._pending, *request.events]
            self._pending = []
            del request.events[:]
            request.events.extend(events)
        if request.messages and not request.message_ids:
            # Minted here, so that writes can be merged (the store takes ids for all of a write's messages or none).
            request.message_ids.extend(str(uuid.uuid4()) for _ in request.messages)
        done: asyncio.Future[store_pb.CheckpointRunResponse] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(request, done))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return done

    async def _send(self) -> None:
        batch: list[_Write] = []
        try:
            while self._queue:
                batch = self._next_batch()
                request = self._merged([write.request for write in batch])
                try:
                    reply = await self._checkpoint(request)
                except Exception as exc:  # noqa: BLE001 - a failed write fails every later one
                    self._fail(exc, batch)
                    return
                if self._tap is not None:  # before the waiters go on: they see their events tapped
                    first = reply.last_event_seq - len(request.events) + 1
                    for offset, event in enumerate(request.events):
                        event.seq = first + offset
                        await self._tap(event)
                for write in batch:
                    if not write.done.done():  # a caller that stopped waiting cancelled its future
                        write.done.set_result(reply)
                batch = []
        except BaseException as exc:
            self._fail(exc, batch)  # cancelled (the loop is closing) or a tap that raised past the hooks
            raise
        finally:
            self._sender = None

    async def _checkpoint(self, request: store_pb.CheckpointRunRequest) -> store_pb.CheckpointRunResponse:
        """Make one write, trying again while the store is away (outage.py): the write is keyed by its request id, so
        a try whose answer was lost is not written twice. The loop goes on meanwhile (its writes queue up), and what
        waits for this write waits; past the outage bound the write fails, and the claim gives the run back."""
        away = outage.Outage()
        while True:
            try:
                return await self._runs.CheckpointRun(request)
            except Exception as exc:
                if not outage.classify(exc, idempotent=True).transient:
                    raise
                wait = away.next_wait()
                if wait is None:
                    raise
                log.warning("write_retrying", reason=getattr(exc, "reason", type(exc).__name__), wait=round(wait, 2))
                await asyncio.sleep(wait)

    def _next_batch(self) -> list[_Write]:
        """The writes at the head of the queue that fit one request (the store's and gRPC's limits)."""
        batch = [self._queue.pop(0)]
        size, events = batch[0].request.ByteSize(), len(batch[0].request.events)
        while self._queue:
            request = self._queue[0].request
            size, events = size + request.ByteSize(), events + len(request.events)
            if size > MAX_MERGED_BYTES or events > MAX_MERGED_EVENTS:
                break
            batch.append(self._queue.pop(0))
        return batch

    def _fail(self, exc: BaseException, batch: list[_Write]) -> None:
        """The writer failed: this write and every queued one fail with `exc` (and so does every later one)."""
        self._error = self._error or exc
        for write in [*batch, *self._queue]:
            if not write.done.done():
                write.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the writer stopped"))
                write.done.exception()  # retrieved here: a write nobody awaits is no error to log
        self._queue = []

    def _merged(self, requests: list[store_pb.CheckpointRunRequest]) -> store_pb.CheckpointRunRequest:
        """One request for the writes queued behind each other: messages and events in order, the last state."""
        self._writes += 1
        # Keyed per holder and write: a retried call after a timeout writes nothing twice.
        key = f"{self._run_id}/{self._epoch}/writes/{self._writes}"
        if len(requests) == 1:
            request = requests[0]
            request.run_id, request.lease_epoch = self._run_id, self._epoch
            request.request_id = request.request_id or key
            self._stamp(request)
            return request
        merged = store_pb.CheckpointRunRequest(run_id=self._run_id, lease_epoch=self._epoch, request_id=key)
        self._stamp(merged)
        for request in requests:
            merged.messages.extend(request.messages)
            merged.message_ids.extend(request.message_ids)
            merged.events.extend(request.events)
            if request.state:
                merged.state, merged.pause_reason = request.state, request.pause_reason
                merged.incomplete_reason = request.incomplete_reason
                if request.HasField("error"):
                    merged.error.CopyFrom(request.error)
            if request.step_count:
                merged.step_count = request.step_count
            if request.HasField("usage"):
                merged.usage.CopyFrom(request.usage)
            if request.stop_reason:
                merged.stop_reason = request.stop_reason
        return merged

    def running_ms(self) -> int:
        """The run's running time so far, as the writes carry it (0 with no clock)."""
        return self._running_ms() if self._running_ms is not None else 0

    def _stamp(self, request: store_pb.CheckpointRunRequest) -> None:
        if self._running_ms is not None:
            request.running_time.FromMilliseconds(self._running_ms())

    def _delta(self, step: int, kind: str, text: str) -> None:
        self._check()
        last = self._pending[-1] if self._pending else None
        if (
            last is not None
            and last.step == step
            and last.WhichOneof("payload") == kind
            and not (kind == "text_delta" and last.text_delta.HasField("tool_call"))
        ):
            merged = last.text_delta if kind == "text_delta" else last.reasoning_delta
            merged.text += text
        elif kind == "text_delta":
            self._pending.append(ev.RunEvent(step=step, text_delta=ev.TextDelta(text=text)))
        else:
            self._pending.append(ev.RunEvent(step=step, reasoning_delta=ev.ReasoningDelta(text=text)))
        self._delta_buffered()

    def _delta_buffered(self) -> None:
        if not self._delta_written:
            self._delta_written = True
            self._write(store_pb.CheckpointRunRequest())  # the first token: written now, while the stream goes on
        else:
            self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._write_buffer)

    def _write_buffer(self) -> None:
        self._timer = None
        if self._pending and self._error is None:
            self._write(store_pb.CheckpointRunRequest())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
