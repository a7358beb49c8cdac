"""RunService: runs, their leases and their event logs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from services.store import validation as v
from services.store.db.leases import LeaseRepository
from services.store.db.run_rows import TERMINAL_EVENT_KINDS
from services.store.db.run_start import NewRun
from services.store.db.run_writes import Checkpoint, RunWriteRepository
from services.store.db.runs import RunRepository
from services.store.notifier import EventNotifier
from steward.auth import current_principal, require_service
from steward.errors import invalid_argument
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc
from steward.timeutil import timestamp

Context = grpc.aio.ServicerContext[Any, Any]

MAX_EVENTS_PER_APPEND = 1000
MAX_CLAIM = 100
MAX_DRIVEN = 10_000  # ClaimRunsRequest.driven_ids
REPLAY_BATCH = 500
MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 3600
MAX_RUNNING_SECONDS = 10**9  # a run's running time, at most (about 31 years; the column holds milliseconds)


def _lease_ttl(value: Duration) -> timedelta:
    ttl = value.ToTimedelta()
    if not MIN_LEASE_SECONDS <= ttl.total_seconds() <= MAX_LEASE_SECONDS:
        raise invalid_argument("lease_ttl", f"lease_ttl must be {MIN_LEASE_SECONDS}..{MAX_LEASE_SECONDS} seconds")
    return ttl


def _holder(value: str) -> str:
    if not value:
        raise invalid_argument("holder", "holder is required")
    return v.plain_text(value, "holder", 128)


def _committed(
    run_id: str, first: int, created: datetime, events: Sequence[run_event_pb2.RunEvent]
) -> list[run_event_pb2.RunEvent]:
    """The appended events as the log now holds them: with run id, seq and time."""
    committed = []
    for offset, event in enumerate(events):
        stored = run_event_pb2.RunEvent()
        stored.CopyFrom(event)
        stored.run_id = run_id
        stored.seq = first + offset
        stored.create_time.FromDatetime(created)
        committed.append(stored)
    return committed


class RunServicer(pb_grpc.RunServiceServicer):
    def __init__(
        self,
        runs: RunRepository,
        leases: LeaseRepository,
        writes: RunWriteRepository,
        notifier: EventNotifier,
        live_poll_seconds: float,
    ) -> None:
        self._runs = runs
        self._leases = leases
        self._writes = writes
        self._notifier = notifier
        self._live_poll_seconds = live_poll_seconds

    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        new_conversation = None
        if request.HasField("new_conversation"):
            if request.conversation_id:
                raise invalid_argument("conversation_id", "conversation_id must be empty with new_conversation")
            new_conversation = request.new_conversation
            v.plain_text(new_conversation.title, "new_conversation.title", v.MAX_TITLE_LENGTH)
            for index, earlier in enumerate(new_conversation.messages):
                v.chat_message(earlier, f"new_conversation.messages[{index}]")
        claim = None
        if request.claim_holder:
            claim = _holder(request.claim_holder), _lease_ttl(request.lease_ttl)
        conversation_id = ""
        if new_conversation is None:
            conversation_id = v.require_id(request.conversation_id, "conversation_id")
        new = NewRun(
            run_id=v.client_run_id(request.run_id),
            conversation_id=conversation_id,
            agent_id=v.require_id(request.agent_id, "agent_id") if request.agent_id else "",
            agent_name=request.agent_name,
            mode=request.mode,
            limits=request.limits,
            request_id=v.optional_request_id(request.request_id),
            input_message=(
                v.chat_message(request.input_message, "input_message") if request.HasField("input_message") else None
            ),
            client_tools=v.tool_specs(list(request.client_tools), "client_tools"),
            new_conversation=new_conversation,
            claim=claim,
        )
        started = await self._runs.create(current_principal().user_id, new)
        return pb.CreateRunResponse(
            run=started.run, existed=started.existed, input_message=started.input_message, agent=started.agent
        )

    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        return pb.GetRunResponse(run=await self._runs.get(current_principal().user_id, v.require_id(request.id, "id")))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        items, next_token = await self._runs.list_runs(
            current_principal().user_id,
            v.plain_text(request.conversation_id, "conversation_id", v.MAX_ID_LENGTH),
            request.page_token,
            v.page_size(request.page_size),
        )
        return pb.ListRunsResponse(runs=items, next_page_token=next_token)

    async def ClaimRun(self, request: pb.ClaimRunRequest, context: Context) -> pb.ClaimRunResponse:
        run = await self._leases.claim(
            current_principal().user_id,
            v.require_id(request.id, "id"),
            _holder(request.holder),
            _lease_ttl(request.lease_ttl),
        )
        return pb.ClaimRunResponse(run=run)

    async def ClaimRuns(self, request: pb.ClaimRunsRequest, context: Context) -> pb.ClaimRunsResponse:
        require_service()
        if not 1 <= request.max_runs <= MAX_CLAIM:
            raise invalid_argument("max_runs", f"max_runs must be 1..{MAX_CLAIM}")
        if len(request.driven_ids) > MAX_DRIVEN:
            raise invalid_argument("driven_ids", f"driven_ids may name at most {MAX_DRIVEN} runs")
        runs = await self._leases.claim_runnable(
            _holder(request.holder),
            request.max_runs,
            _lease_ttl(request.lease_ttl),
            reclaim_held=request.reclaim_held,
            driven={v.require_id(run_id, "driven_ids") for run_id in request.driven_ids},
        )
        return pb.ClaimRunsResponse(runs=runs)

    async def HeartbeatRun(self, request: pb.HeartbeatRunRequest, context: Context) -> pb.HeartbeatRunResponse:
        run, expires = await self._leases.heartbeat(
            current_principal().user_id,
            v.require_id(request.id, "id"),
            request.lease_epoch,
            _lease_ttl(request.lease_ttl),
        )
        return pb.HeartbeatRunResponse(lease_expire_time=timestamp(expires), cancel_requested=run.cancel_requested)

    async def ReleaseRun(self, request: pb.ReleaseRunRequest, context: Context) -> pb.ReleaseRunResponse:
        run = await self._leases.release(
            current_principal().user_id, v.require_id(request.id, "id"), request.lease_epoch
        )
        return pb.ReleaseRunResponse(run=run)

    async def RequestRunCancel(
        self, request: pb.RequestRunCancelRequest, context: Context
    ) -> pb.RequestRunCancelResponse:
        principal = current_principal()
        run_id = v.require_id(request.id, "id")
        run = await self._writes.request_cancel(principal.user_id, run_id, principal.user_id)
        self._notifier.forget(run_id)
        self._notifier.notify(run_id)
        return pb.RequestRunCancelResponse(run=run)

    async def ExpirePausedRuns(
        self, request: pb.ExpirePausedRunsRequest, context: Context
    ) -> pb.ExpirePausedRunsResponse:
        require_service()
        if not 1 <= request.max_runs <= MAX_CLAIM:
            raise invalid_argument("max_runs", f"max_runs must be 1..{MAX_CLAIM}")
        ended = await self._leases.expire_paused(request.max_runs)
        for run, event in ended:
            self._notifier.publish(run.id, [event])
        return pb.ExpirePausedRunsResponse(runs=[run for run, _ in ended], events=[event for _, event in ended])

    async def AppendRunEvents(self, request: pb.AppendRunEventsRequest, context: Context) -> pb.AppendRunEventsResponse:
        run_id = v.require_id(request.run_id, "run_id")
        if not request.events:
            raise invalid_argument("events", "events must not be empty")
        if len(request.events) > MAX_EVENTS_PER_APPEND:
            raise invalid_argument("events", f"at most {MAX_EVENTS_PER_APPEND} events per call")
        request_id = v.optional_request_id(request.request_id)
        first, last, created = await self._writes.append_events(
            current_principal().user_id, run_id, request.lease_epoch, list(request.events), request_id
        )
        if created is not None:
            self._notifier.publish(run_id, _committed(run_id, first, created, request.events))
        return pb.AppendRunEventsResponse(first_seq=first, last_seq=last, replayed=created is None)

    async def CheckpointRun(self, request: pb.CheckpointRunRequest, context: Context) -> pb.CheckpointRunResponse:
        run_id = v.require_id(request.run_id, "run_id")
        for index, message in enumerate(request.messages):
            v.chat_message(message, f"messages[{index}]")
        if len(request.events) > MAX_EVENTS_PER_APPEND:
            raise invalid_argument("events", f"at most {MAX_EVENTS_PER_APPEND} events per call")
        if request.stop_reason not in run_pb2.StopReason.values():
            raise invalid_argument("stop_reason", f"unknown stop_reason {request.stop_reason}")
        step = Checkpoint(
            epoch=request.lease_epoch,
            messages=list(request.messages),
            events=list(request.events),
            state=request.state,
            pause_reason=request.pause_reason,
            incomplete_reason=request.incomplete_reason,
            error=request.error if request.HasField("error") else None,
            step_count=request.step_count,
            usage=request.usage if request.HasField("usage") else None,
            request_id=v.optional_request_id(request.request_id),
            message_ids=v.message_ids(request.message_ids, len(request.messages)),
            running_ms=_running_ms(request),
            stop_reason=request.stop_reason,
            pause_expire_time=(
                request.pause_expire_time.ToDatetime(tzinfo=UTC) if request.HasField("pause_expire_time") else None
            ),
        )
        run, messages, last_seq, created = await self._writes.checkpoint(current_principal().user_id, run_id, step)
        if created is not None and request.events:
            # Live readers take the new events from memory, as after an append.
            first = last_seq - len(request.events) + 1
            self._notifier.publish(run_id, _committed(run_id, first, created, request.events))
        else:
            self._notifier.notify(run_id)
        return pb.CheckpointRunResponse(run=run, messages=messages, last_event_seq=last_seq)

    async def StreamRunEvents(
        self, request: pb.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[pb.StreamRunEventsResponse]:
        """Replay from the database, then follow live appends with no gap or duplicate at the seam.

        The reader pulls one page at a time and gRPC flow control holds it back
        while the client is slow, so a slow subscriber never makes the store buffer.
        """
        owner = current_principal().user_id
        run_id = v.require_id(request.run_id, "run_id")
        if request.after_seq < 0:
            raise invalid_argument("after_seq", "after_seq must not be negative")
        last = request.after_seq
        replaying = True  # the first read is from the database: it checks ownership and the cursor
        while True:
            waiter = self._notifier.waiter(run_id)  # before the read: no wake-up is lost at the seam
            events = [] if replaying else self._notifier.after(run_id, last)
            ended = False
            if not events:
                events, ended = await self._runs.events_after(owner, run_id, last, REPLAY_BATCH)
            replaying = False
            for event in events:
                yield pb.StreamRunEventsResponse(event=event)
                last = event.seq
                if event.WhichOneof("payload") in TERMINAL_EVENT_KINDS:
                    return
            if len(events) == REPLAY_BATCH:
                continue
            if not request.follow or (ended and not events):
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._live_poll_seconds):
                    await waiter.wait()


def _running_ms(request: pb.CheckpointRunRequest) -> int | None:
    """The checkpoint's running time in milliseconds; None when unset."""
    if not request.HasField("running_time"):
        return None
    if not 0 <= request.running_time.seconds <= MAX_RUNNING_SECONDS or request.running_time.nanos < 0:
        raise invalid_argument("running_time", f"running_time must be 0..{MAX_RUNNING_SECONDS} seconds")
    return int(request.running_time.ToMilliseconds())
