"""DecideConfirmation: single-use decisions, checked in the contract's order.

The confirmation row is locked (FOR UPDATE on Postgres; BEGIN IMMEDIATE serializes SQLite), so
of concurrent deciders exactly one finds it pending. An accepted decision, its DECIDED event and
its feed entry commit together. A refused decision commits only its DECISION_REFUSED event, and
the error is raised after that commit; an unknown or foreign id commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db import audit, convert
from services.confirm.db.confirmations import confirmation_not_found
from services.confirm.db.database import Database
from services.confirm.db.models import ConfirmationRow
from services.confirm.db.publish import expire, overdue, publish
from steward import canonical, timeutil
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2
from steward.errors import StewardError

MAX_REFUSED_DECISION_LENGTH = 256 * 1024  # a longer refused decision is not kept in its audit event
_STATE_FOR = {
    confirmation_pb2.DECISION_OUTCOME_APPROVE: confirmation_pb2.CONFIRMATION_STATE_APPROVED,
    confirmation_pb2.DECISION_OUTCOME_REJECT: confirmation_pb2.CONFIRMATION_STATE_REJECTED,
}


@dataclass(frozen=True)
class Decision:
    """A decision that passed its schema."""

    outcome: confirmation_pb2.DecisionOutcome.ValueType
    reason: str
    # The edited arguments in canonical form, and their hash; empty when the arguments were not edited.
    edited_arguments_json: str
    edited_arguments_hash: str


@dataclass(frozen=True)
class DecideRequest:
    confirmation_id: str
    decision_json: str
    expected_arguments_hash: str
    surface: confirmation_pb2.Surface.ValueType
    # The decider as recorded (principals.principal_id).
    decider: str


@dataclass(frozen=True)
class Verdict:
    """What to do with a decision: refuse it (recording `surface`), accept it, or answer an identical repeat."""

    refusal: StewardError | None = None
    decision: Decision | None = None
    surface: confirmation_pb2.Surface.ValueType = confirmation_pb2.SURFACE_UNSPECIFIED


# The contract's checks on a confirmation that exists and is the caller's (services.confirm.decisions.judge).
Judge = Callable[[ConfirmationRow, DecideRequest], Verdict]


class DecisionRepository:
    def __init__(self, database: Database, judge: Judge) -> None:
        self._db = database
        self._judge = judge

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
            verdict = self._judge(row, request)
            if verdict.refusal is not None:
                self._refused(session, row, request, verdict, now)
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
        session: AsyncSession, row: ConfirmationRow, request: DecideRequest, verdict: Verdict, now: datetime
    ) -> None:
        audit.record(
            session,
            row,
            audit_event_pb2.AUDIT_EVENT_KIND_DECISION_REFUSED,
            actor=request.decider,
            surface=verdict.surface,
            reason=verdict.refusal.reason if verdict.refusal is not None else "",
            now=now,
            decision_json=_json_or_empty(request.decision_json),
        )


def _json_or_empty(text: str) -> str:
    """A refused decision's text, canonical, when it is JSON of a sane size (a refusal may be for either)."""
    if len(text) > MAX_REFUSED_DECISION_LENGTH:
        return ""
    try:
        return canonical.canonical(canonical.parse(text))
    except ValueError:
        return ""
