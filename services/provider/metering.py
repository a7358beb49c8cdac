"""Usage ledger and budgets.

Every attempt of every model call writes a usage row, whatever its outcome.
Budgets (per user, and per agent or run when set) are enforced by reserving
the worst-case cost of a call before it starts, atomically against every
budget that applies, and settling to the actual cost afterwards; so concurrent
calls can never spend more than a budget allows (the reservation and the check
happen in one write transaction: SQLite serializes it, Postgres locks the
budget rows FOR UPDATE). Reservations of a crashed process expire.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.models import BudgetRow, ReservationRow
from services.provider.usage_writer import UsageWriter
from steward import timeutil
from steward.common.v1 import usage_pb2
from steward.errors import StewardError
from steward.provider.v1 import budget_pb2, key_pb2, usage_record_pb2

RESERVATION_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class Attempt:
    """Who made a call and for what: the metering context of one attempt."""

    owner_id: str
    agent_id: str
    run_id: str
    step: int
    request_id: str
    route: str


def _period_start(period: budget_pb2.BudgetPeriod.ValueType, now: datetime) -> datetime:
    if period == budget_pb2.BUDGET_PERIOD_DAY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == budget_pb2.BUDGET_PERIOD_MONTH:
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return datetime(1970, 1, 1, tzinfo=now.tzinfo)


def _roll(budget: BudgetRow, now: datetime) -> None:
    """Start a new period if the budget's period has passed (reservations carry over)."""
    start = _period_start(budget.period, now)
    if timeutil.aware(budget.period_start_time) < start:
        budget.period_start_time = start
        budget.spent_micros = 0


def budget_exceeded(detail: str, scope: str) -> StewardError:
    return StewardError(grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED", detail, metadata={"scope": scope})


class Metering:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], budgetless_ttl: float = 2.0) -> None:
        self._sessions = sessions
        self._writer = UsageWriter(sessions)
        # Owners known to have no budget at all, until this monotonic time: their calls skip the
        # locking reserve/settle transactions. SetBudget on this replica clears the entry at once;
        # another replica's SetBudget applies here within `budgetless_ttl` seconds.
        self._budgetless: dict[str, float] = {}
        self._budgetless_ttl = budgetless_ttl

    async def close(self) -> None:
        """Commit what is queued and stop the usage writer."""
        await self._writer.close()

    async def _has_budgets(self, owner_id: str) -> bool:
        until = self._budgetless.get(owner_id)
        if until is not None and until > time.monotonic():
            return False
        async with self._sessions() as session:
            found = await session.scalar(select(BudgetRow.id).where(BudgetRow.owner_id == owner_id).limit(1))
        if found is not None:
            self._budgetless.pop(owner_id, None)
            return True
        if len(self._budgetless) > 100_000:
            self._budgetless.clear()
        self._budgetless[owner_id] = time.monotonic() + self._budgetless_ttl
        return False

    async def record(
        self,
        attempt: Attempt,
        *,
        provider: str,
        model: str,
        number: int,
        outcome: usage_record_pb2.AttemptOutcome.ValueType,
        usage: usage_pb2.Usage,
        key_scope: key_pb2.KeyScope.ValueType = key_pb2.KEY_SCOPE_UNSPECIFIED,
        error_reason: str = "",
    ) -> None:
        """Write the usage row of one attempt (group-committed with concurrent ones)."""
        await self._writer.write(
            {
                "id": str(uuid.uuid4()),
                "owner_id": attempt.owner_id,
                "agent_id": attempt.agent_id,
                "run_id": attempt.run_id,
                "step": attempt.step,
                "request_id": attempt.request_id,
                "route": attempt.route,
                "provider": provider,
                "model": model,
                "attempt": number,
                "outcome": outcome,
                "key_scope": key_scope,
                "error_reason": error_reason,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_write_input_tokens": usage.cache_write_input_tokens,
                "cost_micros": usage.cost_micros,
                "create_time": timeutil.now(),
            }
        )

    async def _applicable(self, session: AsyncSession, attempt: Attempt) -> list[BudgetRow]:
        scopes = [(budget_pb2.BUDGET_SCOPE_USER, "")]
        if attempt.agent_id:
            scopes.append((budget_pb2.BUDGET_SCOPE_AGENT, attempt.agent_id))
        if attempt.run_id:
            scopes.append((budget_pb2.BUDGET_SCOPE_RUN, attempt.run_id))
        rows: list[BudgetRow] = []
        for scope, scope_id in scopes:
            row = await session.scalar(
                select(BudgetRow)
                .where(BudgetRow.owner_id == attempt.owner_id, BudgetRow.scope == scope, BudgetRow.scope_id == scope_id)
                .with_for_update()
            )
            if row is not None:
                rows.append(row)
        return rows

    async def reserve(self, attempt: Attempt, amount_micros: int) -> str | None:
        """Hold `amount_micros` against every budget that applies; None when none applies."""
        if not await self._has_budgets(attempt.owner_id):
            return None
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            budgets = await self._applicable(session, attempt)
            if not budgets:
                return None
            for budget in budgets:
                _roll(budget, now)
                if budget.spent_micros + budget.reserved_micros + amount_micros > budget.limit_micros:
                    scope = budget_pb2.BudgetScope.Name(budget.scope).removeprefix("BUDGET_SCOPE_").lower()
                    left = max(0, budget.limit_micros - budget.spent_micros - budget.reserved_micros)
                    raise budget_exceeded(
                        f"this call may cost up to {amount_micros} micro-dollars; the {scope} budget has {left} left",
                        scope,
                    )
            for budget in budgets:
                budget.reserved_micros += amount_micros
                budget.update_time = now
            reservation = ReservationRow(
                id=str(uuid.uuid4()),
                owner_id=attempt.owner_id,
                budget_ids=json.dumps([b.id for b in budgets]),
                amount_micros=amount_micros,
                create_time=now,
                expire_time=now + RESERVATION_TTL,
            )
            session.add(reservation)
        return reservation.id

    async def settle(self, reservation_id: str | None, attempt: Attempt, actual_micros: int) -> None:
        """Release a reservation and charge the actual cost to the budgets that apply."""
        if reservation_id is None and not await self._has_budgets(attempt.owner_id):
            return
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            held = 0
            if reservation_id is not None:
                reservation = await session.get(ReservationRow, reservation_id, with_for_update=True)
                if reservation is not None:
                    held = reservation.amount_micros
                    await session.execute(delete(ReservationRow).where(ReservationRow.id == reservation_id))
            for budget in await self._applicable(session, attempt):
                _roll(budget, now)
                budget.reserved_micros = max(0, budget.reserved_micros - held)
                budget.spent_micros += actual_micros
                budget.update_time = now

    async def expire_reservations(self) -> int:
        """Release reservations whose process died before settling them."""
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            expired = (
                await session.scalars(select(ReservationRow).where(ReservationRow.expire_time < now).with_for_update())
            ).all()
            for reservation in expired:
                for budget_id in json.loads(reservation.budget_ids):
                    budget = await session.get(BudgetRow, budget_id, with_for_update=True)
                    if budget is not None:
                        budget.reserved_micros = max(0, budget.reserved_micros - reservation.amount_micros)
                await session.delete(reservation)
        return len(expired)

    async def set_budget(
        self,
        owner_id: str,
        scope: budget_pb2.BudgetScope.ValueType,
        scope_id: str,
        limit_micros: int,
        period: budget_pb2.BudgetPeriod.ValueType,
    ) -> budget_pb2.Budget:
        """Create or replace the owner's budget for one scope (its spend in the period is kept)."""
        self._budgetless.pop(owner_id, None)
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            row = await session.scalar(
                select(BudgetRow)
                .where(BudgetRow.owner_id == owner_id, BudgetRow.scope == scope, BudgetRow.scope_id == scope_id)
                .with_for_update()
            )
            if row is None:
                row = BudgetRow(
                    id=str(uuid.uuid4()),
                    owner_id=owner_id,
                    scope=scope,
                    scope_id=scope_id,
                    period=period,
                    limit_micros=limit_micros,
                    spent_micros=0,
                    reserved_micros=0,
                    period_start_time=_period_start(period, now),
                    update_time=now,
                )
                session.add(row)
            else:
                if row.period != period:
                    row.period = period
                    row.period_start_time = _period_start(period, now)
                    row.spent_micros = 0
                row.limit_micros = limit_micros
                row.update_time = now
            _roll(row, now)
        return budget_message(row)

    async def get_budget(
        self, owner_id: str, scope: budget_pb2.BudgetScope.ValueType, scope_id: str
    ) -> budget_pb2.Budget:
        """The owner's budget for one scope; a limit of 0 (no limit) when none was set."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(BudgetRow).where(
                    BudgetRow.owner_id == owner_id, BudgetRow.scope == scope, BudgetRow.scope_id == scope_id
                )
            )
        if row is None:
            return budget_pb2.Budget(scope=scope, scope_id=scope_id)
        _roll(row, timeutil.now())
        return budget_message(row)


def budget_message(row: BudgetRow) -> budget_pb2.Budget:
    budget = budget_pb2.Budget(
        scope=row.scope,
        scope_id=row.scope_id,
        limit_micros=row.limit_micros,
        period=row.period,
        spent_micros=row.spent_micros,
        reserved_micros=row.reserved_micros,
    )
    budget.period_start_time.FromDatetime(timeutil.aware(row.period_start_time))
    budget.update_time.FromDatetime(timeutil.aware(row.update_time))
    return budget
