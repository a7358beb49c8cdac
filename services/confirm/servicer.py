"""ConfirmationService: checks the principal and the request, then calls the repositories."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from services.confirm import requests
from services.confirm import validation as v
from services.confirm.db.audit import AuditRepository
from services.confirm.db.confirmations import ConfirmationRepository
from services.confirm.db.decide import DecideRequest, DecisionRepository
from services.confirm.db.executions import ExecutionRepository
from services.confirm.db.feed import FeedRepository
from services.confirm.notifier import FeedNotifier
from services.confirm.principals import (
    principal_id,
    require_person,
    require_runtime_for_user,
    require_runtime_service,
)
from steward import paging
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirm_service_pb2_grpc as pb_grpc
from steward.errors import invalid_argument

Context = grpc.aio.ServicerContext[Any, Any]

WATCH_BATCH = 200


@dataclass(frozen=True)
class Policy:
    """The deployment's settings the servicer applies."""

    default_ttl_seconds: float
    max_ttl_seconds: float
    live_poll_seconds: float


@dataclass(frozen=True)
class Repositories:
    confirmations: ConfirmationRepository
    decisions: DecisionRepository
    feed: FeedRepository
    executions: ExecutionRepository
    audit: AuditRepository


class ConfirmationServicer(pb_grpc.ConfirmationServiceServicer):
    def __init__(self, repositories: Repositories, notifier: FeedNotifier, policy: Policy) -> None:
        self._confirmations = repositories.confirmations
        self._decisions = repositories.decisions
        self._feed = repositories.feed
        self._executions = repositories.executions
        self._audit = repositories.audit
        self._notifier = notifier
        self._policy = policy

    async def CreateConfirmation(
        self, request: pb.CreateConfirmationRequest, context: Context
    ) -> pb.CreateConfirmationResponse:
        principal = require_runtime_for_user()
        new = requests.new_confirmation(
            request,
            default_ttl=self._policy.default_ttl_seconds,
            max_ttl=self._policy.max_ttl_seconds,
            actor=principal_id(principal),
        )
        return pb.CreateConfirmationResponse(confirmation=await self._confirmations.create(principal.user_id, new))

    async def GetConfirmation(self, request: pb.GetConfirmationRequest, context: Context) -> pb.GetConfirmationResponse:
        principal = require_person()
        if request.request_id and request.id:
            raise invalid_argument("request_id", "name a confirmation by id or by request_id, not both")
        if request.request_id:
            request_id = v.plain_text(request.request_id, "request_id", v.MAX_REQUEST_ID_LENGTH)
            confirmation = await self._confirmations.get(principal.user_id, "", request_id=request_id)
        else:
            confirmation = await self._confirmations.get(principal.user_id, v.require_id(request.id, "id"))
        return pb.GetConfirmationResponse(confirmation=confirmation)

    async def ListConfirmations(
        self, request: pb.ListConfirmationsRequest, context: Context
    ) -> pb.ListConfirmationsResponse:
        principal = require_person()
        items, next_token = await self._confirmations.list_confirmations(
            principal.user_id,
            v.states(request.states),
            v.plain_text(request.run_id, "run_id", v.MAX_ID_LENGTH),
            request.page_token,
            paging.page_size(request.page_size, 50, 200),
        )
        return pb.ListConfirmationsResponse(confirmations=items, next_page_token=next_token)

    async def DecideConfirmation(
        self, request: pb.DecideConfirmationRequest, context: Context
    ) -> pb.DecideConfirmationResponse:
        principal = require_person()
        decide = DecideRequest(
            confirmation_id=v.require_id(request.confirmation_id, "confirmation_id"),
            decision_json=request.decision_json,
            expected_arguments_hash=request.expected_arguments_hash,
            surface=request.surface,
            decider=principal_id(principal),
        )
        return pb.DecideConfirmationResponse(confirmation=await self._decisions.decide(principal.user_id, decide))

    async def CancelConfirmations(
        self, request: pb.CancelConfirmationsRequest, context: Context
    ) -> pb.CancelConfirmationsResponse:
        principal = require_runtime_for_user()
        cancelled = await self._confirmations.cancel(
            principal.user_id,
            v.require_id(request.run_id, "run_id"),
            v.plain_text(request.reason, "reason", v.MAX_REASON_LENGTH),
            principal_id(principal),
        )
        return pb.CancelConfirmationsResponse(confirmations=cancelled)

    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: Context
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        """Replay the feed after the cursor, then follow it; every decision wakes every stream. The response headers
        are sent once the stream's position in the feed is fixed.

        One page is read only after the last one was written, so gRPC flow control bounds what a
        slow watcher makes the service hold.
        """
        require_runtime_service()
        cursor = await self._feed.start(request.after_cursor)
        # The feed's position is fixed: what is decided from now on reaches this stream. The watcher, told so by
        # these headers, can sweep for what was decided before (nothing falls between the two).
        await context.send_initial_metadata(())
        while True:
            waiter = self._notifier.waiter()  # before the read: no wake-up is lost at the seam
            entries = await self._feed.read_after(cursor, WATCH_BATCH)
            for entry_cursor, confirmation in entries:
                yield pb.WatchDecisionsResponse(confirmation=confirmation, cursor=str(entry_cursor))
                cursor = entry_cursor
            if len(entries) == WATCH_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._policy.live_poll_seconds):
                    await waiter.wait()

    async def ListDecidedConfirmations(
        self, request: pb.ListDecidedConfirmationsRequest, context: Context
    ) -> pb.ListDecidedConfirmationsResponse:
        require_runtime_service()
        size = paging.page_size(request.page_size, 100, 500)
        await self._confirmations.expire_overdue()
        items, next_token = await self._feed.list_decided(request.page_token, size)
        return pb.ListDecidedConfirmationsResponse(confirmations=items, next_page_token=next_token)

    async def AcknowledgeDecision(
        self, request: pb.AcknowledgeDecisionRequest, context: Context
    ) -> pb.AcknowledgeDecisionResponse:
        principal = require_runtime_for_user()
        confirmation = await self._feed.acknowledge(
            principal.user_id,
            v.require_id(request.confirmation_id, "confirmation_id"),
            v.lease_epoch(request.lease_epoch),
        )
        return pb.AcknowledgeDecisionResponse(confirmation=confirmation)

    async def BeginExecution(self, request: pb.BeginExecutionRequest, context: Context) -> pb.BeginExecutionResponse:
        principal = require_runtime_for_user()
        execution, created = await self._executions.begin(
            principal.user_id,
            v.require_id(request.confirmation_id, "confirmation_id"),
            idempotent=request.idempotent,
            idempotency_key=v.plain_text(request.idempotency_key, "idempotency_key", v.MAX_IDEMPOTENCY_KEY_LENGTH),
            arguments_hash=v.sha256_hex(request.arguments_hash, "arguments_hash"),
            lease_epoch=v.lease_epoch(request.lease_epoch),
            actor=principal_id(principal),
        )
        return pb.BeginExecutionResponse(execution=execution, created=created)

    async def FinishExecution(self, request: pb.FinishExecutionRequest, context: Context) -> pb.FinishExecutionResponse:
        principal = require_runtime_for_user()
        confirmation_id = v.require_id(request.confirmation_id, "confirmation_id")
        finish = requests.finish(request, principal_id(principal))
        execution = await self._executions.finish(principal.user_id, confirmation_id, finish)
        return pb.FinishExecutionResponse(execution=execution)

    async def GetExecution(self, request: pb.GetExecutionRequest, context: Context) -> pb.GetExecutionResponse:
        principal = require_runtime_for_user()
        confirmation_id = v.require_id(request.confirmation_id, "confirmation_id")
        return pb.GetExecutionResponse(execution=await self._executions.get(principal.user_id, confirmation_id))

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: Context) -> pb.ListAuditEventsResponse:
        principal = require_person()
        events, next_token = await self._audit.list_events(
            principal.user_id,
            v.plain_text(request.run_id, "run_id", v.MAX_ID_LENGTH),
            v.plain_text(request.confirmation_id, "confirmation_id", v.MAX_ID_LENGTH),
            request.page_token,
            paging.page_size(request.page_size, 100, 500),
        )
        return pb.ListAuditEventsResponse(audit_events=events, next_page_token=next_token)
