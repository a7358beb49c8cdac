"""Thin proto <-> repository adapters for the store's services.

Unimplemented RPCs fall through to the generated base classes, which the
server interceptor answers with UNIMPLEMENTED / NOT_IMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.store import validation as v
from services.store.db.conversations import ConversationRepository
from services.store.db.runs import TERMINAL_EVENT_KINDS, Checkpoint, NewRun, RunRepository
from services.store.notifier import EventNotifier
from steward.auth import current_principal
from steward.errors import invalid_argument
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_TITLE_LENGTH = 500
MAX_EVENTS_PER_APPEND = 1000
REPLAY_BATCH = 500
# How long a live reader sleeps without a wake-up before it re-reads the log.
LIVE_POLL_SECONDS = 1.0
MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 3600


class ConversationServicer(pb_grpc.ConversationServiceServicer):
    def __init__(self, conversations: ConversationRepository) -> None:
        self._conversations = conversations

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: Context
    ) -> pb.CreateConversationResponse:
        if len(request.title) > MAX_TITLE_LENGTH:
            raise invalid_argument("title", f"title is longer than {MAX_TITLE_LENGTH} characters")
        if request.agent_id:
            v.require_id(request.agent_id, "agent_id")
        conversation = await self._conversations.create(
            current_principal().user_id, request.title, request.agent_id, v.optional_request_id(request.request_id)
        )
        return pb.CreateConversationResponse(conversation=conversation)

    async def GetConversation(self, request: pb.GetConversationRequest, context: Context) -> pb.GetConversationResponse:
        conversation = await self._conversations.get(current_principal().user_id, v.require_id(request.id, "id"))
        return pb.GetConversationResponse(conversation=conversation)

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        items, next_token = await self._conversations.list_conversations(
            current_principal().user_id, v.page_offset(request.page_token), v.page_size(request.page_size)
        )
        return pb.ListConversationsResponse(conversations=items, next_page_token=next_token)

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        await self._conversations.delete(current_principal().user_id, v.require_id(request.id, "id"))
        return pb.DeleteConversationResponse()

    async def AppendMessage(self, request: pb.AppendMessageRequest, context: Context) -> pb.AppendMessageResponse:
        message = await self._conversations.append(
            current_principal().user_id,
            v.require_id(request.conversation_id, "conversation_id"),
            v.chat_message(request.message, "message"),
            v.optional_request_id(request.request_id),
        )
        return pb.AppendMessageResponse(message=message)

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        items, next_token = await self._conversations.list_messages(
            current_principal().user_id,
            v.require_id(request.conversation_id, "conversation_id"),
            v.page_offset(request.page_token),
            v.page_size(request.page_size, default=100, maximum=1000),
        )
        return pb.ListMessagesResponse(messages=items, next_page_token=next_token)


class RunServicer(pb_grpc.RunServiceServicer):
    def __init__(self, runs: RunRepository, notifier: EventNotifier) -> None:
        self._runs = runs
        self._notifier = notifier

    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        new = NewRun(
            run_id=v.client_run_id(request.run_id),
            conversation_id=v.require_id(request.conversation_id, "conversation_id"),
            agent_id=v.require_id(request.agent_id, "agent_id") if request.agent_id else "",
            mode=request.mode,
            limits=request.limits,
            request_id=v.optional_request_id(request.request_id),
            input_message=(
                v.chat_message(request.input_message, "input_message") if request.HasField("input_message") else None
            ),
        )
        run, existed, message = await self._runs.create(current_principal().user_id, new)
        return pb.CreateRunResponse(run=run, existed=existed, input_message=message)

    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        return pb.GetRunResponse(run=await self._runs.get(current_principal().user_id, v.require_id(request.id, "id")))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        items, next_token = await self._runs.list_runs(
            current_principal().user_id,
            request.conversation_id,
            v.page_offset(request.page_token),
            v.page_size(request.page_size),
        )
        return pb.ListRunsResponse(runs=items, next_page_token=next_token)

    async def ClaimRun(self, request: pb.ClaimRunRequest, context: Context) -> pb.ClaimRunResponse:
        ttl = request.lease_ttl.ToTimedelta()
        if not MIN_LEASE_SECONDS <= ttl.total_seconds() <= MAX_LEASE_SECONDS:
            raise invalid_argument("lease_ttl", f"lease_ttl must be {MIN_LEASE_SECONDS}..{MAX_LEASE_SECONDS} seconds")
        if not request.holder:
            raise invalid_argument("holder", "holder is required")
        run = await self._runs.claim(current_principal().user_id, v.require_id(request.id, "id"), request.holder, ttl)
        return pb.ClaimRunResponse(run=run)

    async def AppendRunEvents(self, request: pb.AppendRunEventsRequest, context: Context) -> pb.AppendRunEventsResponse:
        run_id = v.require_id(request.run_id, "run_id")
        if not request.events:
            raise invalid_argument("events", "events must not be empty")
        if len(request.events) > MAX_EVENTS_PER_APPEND:
            raise invalid_argument("events", f"at most {MAX_EVENTS_PER_APPEND} events per call")
        first, last = await self._runs.append_events(
            current_principal().user_id, run_id, request.lease_epoch, list(request.events)
        )
        self._notifier.notify(run_id)
        return pb.AppendRunEventsResponse(first_seq=first, last_seq=last)

    async def CheckpointRun(self, request: pb.CheckpointRunRequest, context: Context) -> pb.CheckpointRunResponse:
        run_id = v.require_id(request.run_id, "run_id")
        for index, message in enumerate(request.messages):
            v.chat_message(message, f"messages[{index}]")
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
        )
        run, messages = await self._runs.checkpoint(current_principal().user_id, run_id, step)
        self._notifier.notify(run_id)
        return pb.CheckpointRunResponse(run=run, messages=messages, last_event_seq=run.last_event_seq)

    async def StreamRunEvents(
        self, request: pb.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[pb.StreamRunEventsResponse]:
        owner = current_principal().user_id
        run_id = v.require_id(request.run_id, "run_id")
        if request.after_seq < 0:
            raise invalid_argument("after_seq", "after_seq must not be negative")
        last = request.after_seq
        while True:
            waiter = self._notifier.waiter(run_id)  # before the read: no wake-up is lost at the seam
            events, ended = await self._runs.events_after(owner, run_id, last, REPLAY_BATCH)
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
                async with asyncio.timeout(LIVE_POLL_SECONDS):
                    await waiter.wait()
