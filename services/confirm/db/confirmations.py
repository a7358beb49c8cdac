"""Confirmations: create (idempotent by request_id, fenced), get and list (expiring overdue ones first), cancel."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from sqlalchemy import Select, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db import audit, convert
from services.confirm.db.database import Database
from services.confirm.db.fencing import lock_fenced, lock_run
from services.confirm.db.models import ConfirmationRow
from services.confirm.db.publish import DECIDED_STATES, PENDING, expire, expire_overdue, overdue
from steward import paging, timeutil
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2
from steward.errors import StewardError, failed_precondition, invalid_argument, not_found

_NEWEST_FIRST = paging.Keyset(
    "confirmations.1", (ConfirmationRow.create_time, ConfirmationRow.id), (True, True), (datetime, str)
)
EXPIRY_BATCH = 500
# Who decided a write the agent's approval policy let through, and the decision recorded for it.
POLICY = "policy"
POLICY_DECISION = '{"outcome":"approve"}'


def confirmation_not_found(confirmation_id: str) -> StewardError:
    error = not_found("CONFIRMATION_NOT_FOUND", f"confirmation {confirmation_id} not found")
    error.metadata["resource"] = "confirmation"
    return error


@dataclass(frozen=True)
class NewConfirmation:
    """A validated CreateConfirmation request."""

    request_id: str | None
    # SHA-256 of what the request asks for (everything but request_id and lease_epoch).
    request_hash: str
    run_id: str
    conversation_id: str
    tool_call_id: str
    tool_name: str
    arguments_json: str
    arguments_hash: str
    preview: confirmation_pb2.Preview
    decision_schema_json: str
    arguments_schema_json: str
    kind: confirmation_pb2.ConfirmationKind.ValueType
    related_confirmation_id: str
    ttl: timedelta
    lease_epoch: int
    actor: str
    approved_by_policy: bool = False
    # The decision schema's properties that become arguments when approved (Confirmation.decision_arguments).
    decision_arguments: tuple[str, ...] = ()


class ConfirmationRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, user_id: str, new: NewConfirmation) -> confirmation_pb2.Confirmation:
        """Store a pending confirmation and its CREATED event; a repeated request_id returns the earlier one."""
        now = timeutil.now()
        expired = False
        async with self._db.writes() as session, session.begin():
            run = await lock_fenced(session, user_id, new.run_id, new.lease_epoch, now)
            earlier = None
            if new.request_id is not None:
                earlier = await session.scalar(
                    select(ConfirmationRow)
                    .where(ConfirmationRow.user_id == user_id, ConfirmationRow.request_id == new.request_id)
                    .with_for_update()
                )
            if earlier is not None:
                if earlier.request_hash != new.request_hash:
                    raise StewardError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "REQUEST_ID_CONFLICT",
                        "request_id was already used with different content",
                    )
                if expired := overdue(earlier, now):
                    await expire(session, [earlier], now)
                row = earlier
            else:
                if run.cancelled:
                    raise failed_precondition("RUN_STATE_CONFLICT", f"run {new.run_id} has ended")
                if new.related_confirmation_id:
                    await self._check_related(session, user_id, new)
                row = self._row(user_id, new, now)
                session.add(row)
                await session.flush()  # the confirmation exists before its audit event refers to it
                audit.record(
                    session,
                    row,
                    audit_event_pb2.AUDIT_EVENT_KIND_CREATED,
                    actor=new.actor,
                    surface=confirmation_pb2.SURFACE_GRPC,
                    reason="",
                    now=now,
                )
                if new.approved_by_policy:
                    audit.record(
                        session,
                        row,
                        audit_event_pb2.AUDIT_EVENT_KIND_DECIDED,
                        actor=POLICY,
                        surface=confirmation_pb2.SURFACE_POLICY,
                        reason="",
                        now=now,
                    )
        if expired:
            self._db.notifier.notify()
        return convert.confirmation_message(row)

    async def get(self, user_id: str, confirmation_id: str, *, request_id: str = "") -> confirmation_pb2.Confirmation:
        """The user's confirmation (by id, or by the request_id it was created with), expired first when it is
        overdue."""
        async with self._db.reads() as session, session.begin():
            if request_id:
                row = await session.scalar(
                    select(ConfirmationRow).where(
                        ConfirmationRow.user_id == user_id, ConfirmationRow.request_id == request_id
                    )
                )
                if row is None:
                    raise confirmation_not_found(f"of request {request_id}")
                confirmation_id = row.id
            else:
                row = await session.scalar(self._owned(user_id, confirmation_id))
        if row is None:
            raise confirmation_not_found(confirmation_id)
        now = timeutil.now()
        if overdue(row, now):
            async with self._db.writes() as session, session.begin():
                row = await session.scalar(self._owned(user_id, confirmation_id).with_for_update())
                if row is None:
                    raise confirmation_not_found(confirmation_id)
                if expired := overdue(row, now):
                    await expire(session, [row], now)
            if expired:
                self._db.notifier.notify()
        return convert.confirmation_message(row)

    async def list_confirmations(
        self, user_id: str, states: list[int], run_id: str, page_token: str, page_size: int
    ) -> tuple[list[confirmation_pb2.Confirmation], str]:
        """The user's confirmations in `states`, newest first, after expiring the user's overdue ones."""
        _NEWEST_FIRST.after(page_token)  # a bad token is refused before anything is expired
        await self.expire_overdue(user_id)
        query = select(ConfirmationRow).where(ConfirmationRow.user_id == user_id, ConfirmationRow.state.in_(states))
        if run_id:
            query = query.where(ConfirmationRow.run_id == run_id)
        async with self._db.reads() as session, session.begin():
            return await paging.read_page(
                session, query, _NEWEST_FIRST, page_token, page_size, convert.confirmation_message
            )

    async def expire_overdue(self, user_id: str | None = None) -> int:
        """Expire overdue confirmations (of one user, or of all); a read finds out first whether there are any."""
        now = timeutil.now()
        query = select(ConfirmationRow.id).where(ConfirmationRow.state == PENDING, ConfirmationRow.expire_time <= now)
        if user_id is not None:
            query = query.where(ConfirmationRow.user_id == user_id)
        async with self._db.reads() as session, session.begin():
            if not await session.scalar(select(exists(query))):
                return 0
        total = 0
        while True:
            async with self._db.writes() as session, session.begin():
                count = await expire_overdue(session, now, EXPIRY_BATCH, user_id)
            if count:
                total += count
                self._db.notifier.notify()
            if count < EXPIRY_BATCH:
                return total

    async def cancel(self, user_id: str, run_id: str, reason: str, actor: str) -> list[confirmation_pb2.Confirmation]:
        """End a run's confirmations: cancel the pending ones, acknowledge its unconsumed decisions."""
        now = timeutil.now()
        async with self._db.writes() as session, session.begin():
            run = await lock_run(session, user_id, run_id, now)
            if not run.cancelled:
                run.cancelled = True
                run.cancel_reason = reason
                run.cancel_time = now
                run.update_time = now
            of_run = select(ConfirmationRow).where(ConfirmationRow.user_id == user_id, ConfirmationRow.run_id == run_id)
            pending = (
                await session.scalars(
                    of_run.where(ConfirmationRow.state == PENDING)
                    .order_by(ConfirmationRow.create_time)
                    .with_for_update()
                )
            ).all()
            for row in pending:
                row.state = confirmation_pb2.CONFIRMATION_STATE_CANCELLED
                row.update_time = now
                audit.record(
                    session,
                    row,
                    audit_event_pb2.AUDIT_EVENT_KIND_CANCELLED,
                    actor=actor,
                    surface=confirmation_pb2.SURFACE_GRPC,
                    reason=reason,
                    now=now,
                )
            unconsumed = (
                await session.scalars(
                    of_run.where(
                        ConfirmationRow.state.in_(DECIDED_STATES), ConfirmationRow.acknowledge_time.is_(None)
                    ).with_for_update()
                )
            ).all()
            for row in unconsumed:
                row.acknowledge_time = now
                row.update_time = now
        return [convert.confirmation_message(row) for row in pending]

    @staticmethod
    def _owned(user_id: str, confirmation_id: str) -> Select[ConfirmationRow]:
        return select(ConfirmationRow).where(ConfirmationRow.id == confirmation_id, ConfirmationRow.user_id == user_id)

    @staticmethod
    async def _check_related(session: AsyncSession, user_id: str, new: NewConfirmation) -> None:
        related = await session.scalar(
            select(ConfirmationRow.id).where(
                ConfirmationRow.id == new.related_confirmation_id,
                ConfirmationRow.user_id == user_id,
                ConfirmationRow.run_id == new.run_id,
            )
        )
        if related is None:
            message = "related_confirmation_id names no confirmation of this run"
            raise invalid_argument("related_confirmation_id", message)

    @staticmethod
    def _row(user_id: str, new: NewConfirmation, now: datetime) -> ConfirmationRow:
        row = ConfirmationRow(
            id=str(uuid.uuid4()),
            user_id=user_id,
            run_id=new.run_id,
            conversation_id=new.conversation_id,
            tool_call_id=new.tool_call_id,
            tool_name=new.tool_name,
            arguments_json=new.arguments_json,
            arguments_hash=new.arguments_hash,
            preview_kind=new.preview.kind,
            preview_title=new.preview.title,
            preview_content=new.preview.content,
            decision_schema_json=new.decision_schema_json,
            arguments_schema_json=new.arguments_schema_json,
            decision_arguments_json=json.dumps(list(new.decision_arguments)) if new.decision_arguments else "",
            kind=new.kind,
            related_confirmation_id=new.related_confirmation_id,
            state=PENDING,
            create_time=now,
            update_time=now,
            expire_time=now + new.ttl,
            outcome=confirmation_pb2.DECISION_OUTCOME_UNSPECIFIED,
            decision_reason="",
            edited_arguments_json="",
            decision_json="",
            decided_by="",
            decision_surface=confirmation_pb2.SURFACE_UNSPECIFIED,
            request_id=new.request_id,
            request_hash=new.request_hash,
        )
        if new.approved_by_policy:
            # Decided as it is made, and acknowledged: no decision feed entry, nothing waits for it.
            row.state = confirmation_pb2.CONFIRMATION_STATE_APPROVED
            row.outcome = confirmation_pb2.DECISION_OUTCOME_APPROVE
            row.decision_json = POLICY_DECISION
            row.decided_by = POLICY
            row.decision_surface = confirmation_pb2.SURFACE_POLICY
            row.decide_time = now
            row.acknowledge_time = now
        return row
