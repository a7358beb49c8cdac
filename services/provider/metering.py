"""Usage ledger and budgets.

Every attempt of every model call writes a usage row, whatever its outcome.
Budgets (per user, and per agent or run when set) are enforced by reserving
the worst-case cost of a call before it starts, atomically against every
budget that applies, and settling to the actual cost afterwards; so concurrent
calls can never spend more than a budget allows (the reservation and the check
happen in one write transaction: SQLite serializes it, Postgres locks the
budget rows FOR UPDATE; `db.budgets` runs them). Reservations of a crashed
process expire. A budget with a limit of 0 has no limit and only keeps count.
A call that may use a model with no price is refused (MODEL_UNPRICED) when a
budget with a limit applies: its cost could not be held (ADR 0022).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.budgets import BudgetRepository, Standing
from services.provider.db.usage import NewUsageRecord, UsageInserts
from services.provider.usage_writer import UsageWriter
from steward import timeutil
from steward.common.v1 import usage_pb2
from steward.errors import Reason, StewardError
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


def budget_exceeded(detail: str, scope: str) -> StewardError:
    return StewardError(grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED", detail, metadata={"scope": scope})


def model_unpriced(models: Sequence[str], scope: str) -> StewardError:
    return StewardError(
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.MODEL_UNPRICED,
        f"{', '.join(models)} has no price, so a {scope} budget cannot hold it: add it to the price table "
        "(STEWARD_PRICES_FILE), or mark it free if it costs nothing",
        metadata={"models": ",".join(models), "scope": scope},
    )


def _scope_name(scope: budget_pb2.BudgetScope.ValueType) -> str:
    return budget_pb2.BudgetScope.Name(scope).removeprefix("BUDGET_SCOPE_").lower()


def _admit(budget: Standing, amount_micros: int) -> None:
    """Refuse a reservation that would take the budget's settled spend and reservations past its limit (a limit of
    0 is no limit: the budget only keeps count)."""
    if budget.limit_micros <= 0:
        return
    if budget.spent_micros + budget.reserved_micros + amount_micros > budget.limit_micros:
        scope = _scope_name(budget.scope)
        left = max(0, budget.limit_micros - budget.spent_micros - budget.reserved_micros)
        raise budget_exceeded(
            f"this call may cost up to {amount_micros} micro-dollars; the {scope} budget has {left} left",
            scope,
        )


def _scopes(attempt: Attempt) -> list[tuple[int, str]]:
    """The budgets that apply to an attempt: the user's, and its agent's and run's when it has them."""
    scopes: list[tuple[int, str]] = [(budget_pb2.BUDGET_SCOPE_USER, "")]
    if attempt.agent_id:
        scopes.append((budget_pb2.BUDGET_SCOPE_AGENT, attempt.agent_id))
    if attempt.run_id:
        scopes.append((budget_pb2.BUDGET_SCOPE_RUN, attempt.run_id))
    return scopes


class Metering:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], budgetless_ttl: float = 2.0) -> None:
        self._budgets = BudgetRepository(sessions, _period_start)
        self._writer = UsageWriter(UsageInserts(sessions))
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
        if await self._budgets.any_for(owner_id):
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
            NewUsageRecord(
                id=str(uuid.uuid4()),
                owner_id=attempt.owner_id,
                agent_id=attempt.agent_id,
                run_id=attempt.run_id,
                step=attempt.step,
                request_id=attempt.request_id,
                route=attempt.route,
                provider=provider,
                model=model,
                attempt=number,
                outcome=outcome,
                key_scope=key_scope,
                error_reason=error_reason,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_write_input_tokens=usage.cache_write_input_tokens,
                cost_micros=usage.cost_micros,
                cost_unknown=usage.cost_unknown,
                create_time=timeutil.now(),
            )
        )

    async def reserve(self, attempt: Attempt, amount_micros: int, unpriced: Sequence[str] = ()) -> str | None:
        """Hold `amount_micros` against every budget that applies; None when none applies. `unpriced`: models the
        call may use that have no price; a budget with a limit cannot hold them (MODEL_UNPRICED)."""
        if not await self._has_budgets(attempt.owner_id):
            return None

        def admit(budget: Standing, amount: int) -> None:
            if unpriced and budget.limit_micros > 0:
                raise model_unpriced(unpriced, _scope_name(budget.scope))
            _admit(budget, amount)

        return await self._budgets.reserve(attempt.owner_id, _scopes(attempt), amount_micros, RESERVATION_TTL, admit)

    async def settle(self, reservation_id: str | None, attempt: Attempt, actual_micros: int) -> None:
        """Release a reservation and charge the actual cost to the budgets that apply."""
        if reservation_id is None and not await self._has_budgets(attempt.owner_id):
            return
        await self._budgets.settle(reservation_id, attempt.owner_id, _scopes(attempt), actual_micros)

    async def expire_reservations(self) -> int:
        """Release reservations whose process died before settling them."""
        return await self._budgets.expire_reservations()

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
        return await self._budgets.put(owner_id, scope, scope_id, limit_micros, period)

    async def get_budget(
        self, owner_id: str, scope: budget_pb2.BudgetScope.ValueType, scope_id: str
    ) -> budget_pb2.Budget:
        """The owner's budget for one scope; a limit of 0 (no limit) when none was set."""
        budget = await self._budgets.get(owner_id, scope, scope_id)
        if budget is None:
            return budget_pb2.Budget(scope=scope, scope_id=scope_id)
        return budget
