"""DecideConfirmation: single-use decisions, checked in the contract's order.

The confirmation row is locked (FOR UPDATE on Postgres; BEGIN IMMEDIATE serializes SQLite), so
of concurrent deciders exactly one finds it pending. An accepted decision, its DECIDED event and
its feed entry commit together. A refused decision commits only its DECISION_REFUSED event, and
the error is raised after that commit; an unknown or foreign id commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm import convert
from services.confirm.db import audit
from services.confirm.db.confirmations import confirmation_not_found
from services.confirm.db.database import Database
from services.confirm.db.models import ConfirmationRow
from services.confirm.db.publish import expire, overdue, publish
from services.confirm.decisions import Decision, check_edited_arguments, edits_refused, parse_decision, same_decision
from services.confirm.validation import CALLER_SURFACES
from steward import timeutil
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2
from steward.errors import StewardError, failed_precondition, invalid_argument

_STATE_FOR = {
    confirmation_pb2.DECISION_OUTCOME_APPROVE: confirmation_pb2.CONFIRMATION_STATE_APPROVED,
    confirmation_pb2.DECISION_OUTCOME_REJECT: confirmation_pb2.CONFIRMATION_STATE_REJECTED,
}


@dataclass(frozen=True)
class DecideRequest:
    confirmation_id: str
    decision_json: str
    expected_arguments_hash: str
    surface: confirmation_pb2.Surface.ValueType
    # The decider as recorded (principals.principal_id).
    decider: str


@dataclass(frozen=True)
class _Verdict:
    """What to do with a decision: refuse it, accept it, or answer an identical repeat."""

    refusal: StewardError | None = None
    decision: Decision | None = None


def judge(row: ConfirmationRow, request: DecideRequest) -> _Verdict:
    """The contract's checks, in its order, on a confirmation that exists and is the caller's."""
    state = row.state
    if state == confirmation_pb2.CONFIRMATION_STATE_EXPIRED:
        return _Verdict(failed_precondition("CONFIRMATION_EXPIRED", f"confirmation {row.id} expired"))
    if state == confirmation_pb2.CONFIRMATION_STATE_CANCELLED:
        return _Verdict(failed_precondition("RUN_STATE_CONFLICT", f"the run of confirmation {row.id} has ended"))
    if state != confirmation_pb2.CONFIRMATION_STATE_PENDING:
        if row.decided_by == request.decider and same_decision(row.decision_json, request.decision_json):
            return _Verdict()
        return _Verdict(
            failed_precondition("CONFIRMATION_ALREADY_DECIDED", f"confirmation {row.id} was already decided")
        )
    if request.expected_arguments_hash and request.expected_arguments_hash != row.arguments_hash:
        return _Verdict(failed_precondition("ARGUMENTS_MISMATCH", "the arguments changed since they were shown"))
    try:
        decision = parse_decision(row.decision_schema_json, request.decision_json)
        if decision.edited_arguments_json and row.kind == confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN:
            raise edits_refused()
        check_edited_arguments(row.arguments_schema_json, decision)
    except StewardError as refused:
        return _Verdict(refused)
    if request.surface not in CALLER_SURFACES:
        return _Verdict(invalid_argument("surface", "surface must name where the decision was made"))
    return _Verdict(decision=decision)


class DecisionRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def decide(self, user_id: str, request: DecideRequest) -> confirmation_pb2.Confirmation:
        """Record a decision, or refuse it with only a DECISION_REFUSED event (see the module docstring)."""
        now = timeutil.now()
        async with self._db.writes() as session, session.begin():
            row = await session.scalar(
                select(ConfirmationRow)
                .where(ConfirmationRow.id == request.confirmation_id, ConfirmationRow.user_id == user_id)
                .with_for_update()
            )
            if row is None:
                raise confirmation_not_found(request.confirmation_id)
            published = overdue(row, now)
            if published:
                await expire(session, [row], now)
            verdict = judge(row, request)
            if verdict.refusal is not None:
                self._refused(session, row, request, verdict.refusal, now)
            elif verdict.decision is not None:
                await self._accept(session, row, request, verdict.decision, now)
                published = True
        if published:
            self._db.notifier.notify()
        if verdict.refusal is not None:
            raise verdict.refusal
        return convert.confirmation_message(row)

    @staticmethod
    async def _accept(
        session: AsyncSession, row: ConfirmationRow, request: DecideRequest, decision: Decision, now: datetime
    ) -> None:
        row.state = _STATE_FOR[decision.outcome]
        row.outcome = decision.outcome
        row.decision_reason = decision.reason
        row.edited_arguments_json = decision.edited_arguments_json
        row.decision_json = request.decision_json
        row.decided_by = request.decider
        row.decision_surface = request.surface
        row.decide_time = now
        row.update_time = now
        audit.record(
            session,
            row,
            audit_event_pb2.AUDIT_EVENT_KIND_DECIDED,
            actor=request.decider,
            surface=request.surface,
            reason=decision.reason,
            now=now,
        )
        await publish(session, [row], now)

    @staticmethod
    def _refused(
        session: AsyncSession, row: ConfirmationRow, request: DecideRequest, refusal: StewardError, now: datetime
    ) -> None:
        surface = request.surface if request.surface in CALLER_SURFACES else confirmation_pb2.SURFACE_UNSPECIFIED
        audit.record(
            session,
            row,
            audit_event_pb2.AUDIT_EVENT_KIND_DECISION_REFUSED,
            actor=request.decider,
            surface=surface,
            reason=refusal.reason,
            now=now,
        )
