"""A run's cost limit, held by the provider as a budget for that run.

The runtime's own check (`steps._limit_reached`) sees the run's cost only between steps, so one step
could overshoot the limit. The provider reserves a call's worst-case cost against every budget that
applies before calling upstream, atomically (ADR 0006), so a RUN-scoped budget whose limit is the run's
`max_cost_micros` makes the limit hard: a step whose worst case does not fit what is left is refused with
BUDGET_EXCEEDED, and the run ends incomplete (budget).

The budget is set once per claim, before the first step, acting as the run's owner (budgets belong to the
calling principal; a scope id only selects one of its runs). Setting the same limit and period again keeps
the spend, so a resumed or taken-over run goes on from what it spent.
"""

from __future__ import annotations

from services.runtime.agents import Limits
from steward.provider.v1 import budget_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_pb2

MAX_BUDGET_MICROS = 10**15  # the largest limit the provider accepts


async def hold_run_budget(provider: provider_grpc.ProviderServiceAsyncStub, run: run_pb2.Run, limits: Limits) -> None:
    """Make the provider hold the run to `limits.max_cost_micros` (nothing when the run has no cost limit)."""
    if limits.max_cost_micros <= 0:
        return
    limit = min(limits.max_cost_micros, MAX_BUDGET_MICROS)
    budget = await _set(provider, run.id, limit)
    # Spend the budget never saw (steps taken before the run had a cost limit, say an agent limit set while
    # the run was paused) counts too. A limit already used up is left to the runtime's check between steps.
    unseen = run.usage.cost_micros - budget.spent_micros
    if unseen > 0:
        await _set(provider, run.id, max(1, limit - unseen))


async def _set(provider: provider_grpc.ProviderServiceAsyncStub, run_id: str, limit: int) -> budget_pb2.Budget:
    reply = await provider.SetBudget(
        provider_pb.SetBudgetRequest(
            scope=budget_pb2.BUDGET_SCOPE_RUN,
            scope_id=run_id,
            limit_micros=limit,
            period=budget_pb2.BUDGET_PERIOD_LIFETIME,
        )
    )
    return reply.budget
