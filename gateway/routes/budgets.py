"""The caller's budgets: /api/v1/budget, /api/v1/agents/{id}/budget, /api/v1/runs/{id}/budget.

A budget caps the caller's spend (in millionths of a US dollar) per period (`day`, `month` or `lifetime`):
all of it, or on one of their agents. The provider service reserves a call's worst-case cost against every
budget that applies before the call, so concurrent calls cannot overshoot. A user sets their own user and
agent budgets (PUT states the whole new value; `limit_micros` 0 removes the limit; deployment-wide caps apply
as well). A run's budget is read here and set by the run's `limits.max_cost_micros` when the run starts.

The provider owns budgets by the caller and does not know agents or runs, so the agent or run is looked up
in the store first: another user's (or an unknown) id is 404 there, as on every route that takes an id.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import presenters
from gateway.app_keys import CLIENTS
from gateway.bodies import json_object
from steward.provider.v1 import budget_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

PERIODS = {
    "day": budget_pb2.BUDGET_PERIOD_DAY,
    "month": budget_pb2.BUDGET_PERIOD_MONTH,
    "lifetime": budget_pb2.BUDGET_PERIOD_LIFETIME,
}
_PERIOD_NAMES = {value: name for name, value in PERIODS.items()}
_SCOPE_NAMES = {
    budget_pb2.BUDGET_SCOPE_USER: "user",
    budget_pb2.BUDGET_SCOPE_AGENT: "agent",
    budget_pb2.BUDGET_SCOPE_RUN: "run",
}


def budget_json(budget: budget_pb2.Budget) -> dict[str, Any]:
    """A budget with its current spend; `limit_micros` 0 means no limit, `period` null a budget never set."""
    return {
        "scope": _SCOPE_NAMES.get(budget.scope),
        "scope_id": budget.scope_id or None,
        "limit_micros": budget.limit_micros,
        "period": _PERIOD_NAMES.get(budget.period),
        "spent_micros": budget.spent_micros,
        "reserved_micros": budget.reserved_micros,
        "period_start_time": presenters.time_json(budget.period_start_time, budget.HasField("period_start_time")),
        "update_time": presenters.time_json(budget.update_time, budget.HasField("update_time")),
    }


def _new_value(body: dict[str, Any]) -> tuple[int, budget_pb2.BudgetPeriod.ValueType]:
    """`BudgetIn`: the document requires both fields and bounds them."""
    return body["limit_micros"], PERIODS[body["period"]]


async def _get(request: web.Request, scope: budget_pb2.BudgetScope.ValueType, scope_id: str = "") -> web.Response:
    reply = await request.app[CLIENTS].provider.GetBudget(provider_pb.GetBudgetRequest(scope=scope, scope_id=scope_id))
    return web.json_response(budget_json(reply.budget))


async def _set(request: web.Request, scope: budget_pb2.BudgetScope.ValueType, scope_id: str = "") -> web.Response:
    limit, period = _new_value(await json_object(request))
    reply = await request.app[CLIENTS].provider.SetBudget(
        provider_pb.SetBudgetRequest(scope=scope, scope_id=scope_id, limit_micros=limit, period=period)
    )
    return web.json_response(budget_json(reply.budget))


async def _own_agent(request: web.Request) -> str:
    """The path's agent id, once the store has found it among the caller's agents (else 404 AGENT_NOT_FOUND)."""
    reply = await request.app[CLIENTS].agents.GetAgent(store_pb.GetAgentRequest(id=request.match_info["agent_id"]))
    return reply.agent.id


@routes.get("/api/v1/budget")
async def get_user_budget(request: web.Request) -> web.Response:
    return await _get(request, budget_pb2.BUDGET_SCOPE_USER)


@routes.put("/api/v1/budget")
async def set_user_budget(request: web.Request) -> web.Response:
    return await _set(request, budget_pb2.BUDGET_SCOPE_USER)


@routes.get("/api/v1/agents/{agent_id}/budget")
async def get_agent_budget(request: web.Request) -> web.Response:
    return await _get(request, budget_pb2.BUDGET_SCOPE_AGENT, await _own_agent(request))


@routes.put("/api/v1/agents/{agent_id}/budget")
async def set_agent_budget(request: web.Request) -> web.Response:
    return await _set(request, budget_pb2.BUDGET_SCOPE_AGENT, await _own_agent(request))


@routes.get("/api/v1/runs/{run_id}/budget")
async def get_run_budget(request: web.Request) -> web.Response:
    reply = await request.app[CLIENTS].runs.GetRun(store_pb.GetRunRequest(id=request.match_info["run_id"]))
    return await _get(request, budget_pb2.BUDGET_SCOPE_RUN, reply.run.id)
