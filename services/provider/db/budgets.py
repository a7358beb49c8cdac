"""Budgets and the reservations held against them.

Reserving, settling and expiring each run in one write transaction that locks the budget rows
(SQLite serializes write transactions with BEGIN IMMEDIATE; Postgres takes the rows FOR UPDATE),
so concurrent calls can never reserve past a limit. The service's rules are handed in: when a
budget's period starts (`PeriodStart`; a row whose period has passed starts the new one at zero
spend, keeping its reservations) and whether a reservation fits a budget (`Admit`, which raises to
refuse and so rolls the transaction back).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.convert import budget_message
from services.provider.db.models import BudgetRow, ReservationRow
from steward import timeutil
from steward.provider.v1 import budget_pb2

# When the period (a BudgetPeriod value) that contains a time starts.
PeriodStart = Callable[[budget_pb2.BudgetPeriod.ValueType, datetime], datetime]


@dataclass(frozen=True)
class Standing:
    """Where a budget stands when a call asks to reserve against it (its current period)."""

    scope: budget_pb2.BudgetScope.ValueType
    limit_micros: int
    spent_micros: int
    reserved_micros: int


# Raises when `amount_micros` does not fit the budget.
Admit = Callable[[Standing, int], None]


class BudgetRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], period_start: PeriodStart) -> None:
        self._sessions = sessions
        self._period_start = period_start

    def _roll(self, budget: BudgetRow, now: datetime) -> None:
        """Start a new period if the budget's period has passed (reservations carry over)."""
        start = self._period_start(budget.period, now)
        if timeutil.aware(budget.period_start_time) < start:
            budget.period_start_time = start
            budget.spent_micros = 0

    async def any_for(self, owner_id: str) -> bool:
        """Whether the owner has a budget of any scope."""
        async with self._sessions() as session:
            found = await session.scalar(select(BudgetRow.id).where(BudgetRow.owner_id == owner_id).limit(1))
        return found is not None

    @staticmethod
    async def _applicable(session: AsyncSession, owner_id: str, scopes: Sequence[tuple[int, str]]) -> list[BudgetRow]:
        rows: list[BudgetRow] = []
        for scope, scope_id in scopes:
            row = await session.scalar(
                select(BudgetRow)
                .where(BudgetRow.owner_id == owner_id, BudgetRow.scope == scope, BudgetRow.scope_id == scope_id)
                .with_for_update()
            )
            if row is not None:
                rows.append(row)
        return rows

    async def reserve(
        self,
        owner_id: str,
        scopes: Sequence[tuple[int, str]],
        amount_micros: int,
        ttl: timedelta,
        admit: Admit,
    ) -> str | None:
        """Hold `amount_micros` against each of the owner's budgets of `scopes` (in that order) if `admit` lets
        it on every one; the reservation's id, or None when no budget applies."""
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            budgets = await self._applicable(session, owner_id, scopes)
            if not budgets:
                return None
            for budget in budgets:
                self._roll(budget, now)
                admit(
                    Standing(budget.scope, budget.limit_micros, budget.spent_micros, budget.reserved_micros),
                    amount_micros,
                )
            for budget in budgets:
                budget.reserved_micros += amount_micros
                budget.update_time = now
            reservation = ReservationRow(
                id=str(uuid.uuid4()),
                owner_id=owner_id,
                budget_ids=json.dumps([b.id for b in budgets]),
                amount_micros=amount_micros,
                create_time=now,
                expire_time=now + ttl,
            )
            session.add(reservation)
        return reservation.id

    async def settle(
        self, reservation_id: str | None, owner_id: str, scopes: Sequence[tuple[int, str]], actual_micros: int
    ) -> None:
        """Release a reservation and charge `actual_micros` to the owner's budgets of `scopes`."""
        async with self._sessions() as session, session.begin():
            now = timeutil.now()
            held = 0
            if reservation_id is not None:
                reservation = await session.get(ReservationRow, reservation_id, with_for_update=True)
                if reservation is not None:
                    held = reservation.amount_micros
                    await session.execute(delete(ReservationRow).where(ReservationRow.id == reservation_id))
            for budget in await self._applicable(session, owner_id, scopes):
                self._roll(budget, now)
                budget.reserved_micros = max(0, budget.reserved_micros - held)
                budget.spent_micros += actual_micros
                budget.update_time = now

    async def expire_reservations(self) -> int:
        """Release the reservations past their expiry time; how many."""
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

    async def put(
        self,
        owner_id: str,
        scope: budget_pb2.BudgetScope.ValueType,
        scope_id: str,
        limit_micros: int,
        period: budget_pb2.BudgetPeriod.ValueType,
    ) -> budget_pb2.Budget:
        """Create or replace the owner's budget for one scope (a new period restarts its spend)."""
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
                    period_start_time=self._period_start(period, now),
                    update_time=now,
                )
                session.add(row)
            else:
                if row.period != period:
                    row.period = period
                    row.period_start_time = self._period_start(period, now)
                    row.spent_micros = 0
                row.limit_micros = limit_micros
                row.update_time = now
            self._roll(row, now)
        return budget_message(row)

    async def get(
        self, owner_id: str, scope: budget_pb2.BudgetScope.ValueType, scope_id: str
    ) -> budget_pb2.Budget | None:
        """The owner's budget for one scope as of now (None when none was set)."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(BudgetRow).where(
                    BudgetRow.owner_id == owner_id, BudgetRow.scope == scope, BudgetRow.scope_id == scope_id
                )
            )
        if row is None:
            return None
        self._roll(row, timeutil.now())
        return budget_message(row)
