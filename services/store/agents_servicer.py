"""AgentService: a thin proto <-> repository adapter for agent definitions.

Every RPC acts for the calling user, whose id comes from the verified principal
and never from the request, except ListAgentModelRoutes: it serves services only
and sees every user's agents (the routes they name, how many, and a few by name),
so a gateway can report agents left on a route that no longer exists. Field
validation lives here; UpdateAgent validates only the fields its mask names, so a
partial update need not resend the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store import validation as v
from services.store.db.agents import MUTABLE_FIELDS, AgentRepository
from services.store.db.runner import TransactionRunner
from services.store.text import no_nul, plain_text, text_list
from steward.auth import require_service, require_user
from steward.common.v1 import limits_pb2
from steward.errors import StewardError, invalid_argument, not_found
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MODEL_ROUTE_PATTERN = re.compile(r"[A-Za-z0-9_./:-]+")
MAX_DESCRIPTION_LENGTH = 2_000
MAX_SYSTEM_PROMPT_LENGTH = 100_000
MAX_MODEL_ROUTE_LENGTH = 128
MAX_TOOLS = 200
MAX_TOOL_NAME_LENGTH = 200
MAX_APPLIED = 500  # agents in one ApplyAgents call
MAX_ROUTES_LISTED = 1_000  # routes in one ListAgentModelRoutes answer (also the default)
DEFAULT_EXAMPLES = 5  # example agents per route in it
MAX_EXAMPLES = 20
_OUTCOMES = {
    "created": pb.APPLY_OUTCOME_CREATED,
    "updated": pb.APPLY_OUTCOME_UPDATED,
    "unchanged": pb.APPLY_OUTCOME_UNCHANGED,
}


def _name(value: str, field: str) -> None:
    no_nul(value, field)
    if NAME_PATTERN.fullmatch(value) is None:
        raise invalid_argument(field, f"{field} must match {NAME_PATTERN.pattern}")


def _model_route(value: str, field: str) -> None:
    if not value:
        raise invalid_argument(field, f"{field} is required")
    plain_text(value, field, MAX_MODEL_ROUTE_LENGTH)
    if MODEL_ROUTE_PATTERN.fullmatch(value) is None:
        raise invalid_argument(field, f"{field} must match {MODEL_ROUTE_PATTERN.pattern}")


def _approval_policy(policy: agent_pb2.ApprovalPolicy, field: str) -> None:
    if policy.mode not in agent_pb2.RunMode.values():
        raise invalid_argument(f"{field}.mode", f"{field}.mode is not a known run mode")
    for name in ("auto_approved_tools", "always_confirm_tools"):
        text_list(getattr(policy, name), f"{field}.{name}", max_items=MAX_TOOLS, max_length=MAX_TOOL_NAME_LENGTH)


def _duration(value: Duration, field: str) -> None:
    if value.seconds < 0 or value.nanos < 0:
        raise invalid_argument(field, f"{field} must not be negative")


def _limits(limits: limits_pb2.RunLimits, field: str) -> None:
    for name in ("max_steps", "max_tokens", "max_cost_micros"):
        if getattr(limits, name) < 0:
            raise invalid_argument(f"{field}.{name}", f"{field}.{name} must not be negative")
    _duration(limits.timeout, f"{field}.timeout")
    _duration(limits.tool_timeout, f"{field}.tool_timeout")
    _duration(limits.first_token_timeout, f"{field}.first_token_timeout")
    _duration(limits.pause_timeout, f"{field}.pause_timeout")


def _agent(agent: agent_pb2.Agent, field: str, paths: Sequence[str] = MUTABLE_FIELDS) -> agent_pb2.Agent:
    """`agent` if the fields named by `paths` are valid; INVALID_ARGUMENT naming the first bad one."""
    for path in paths:
        where = f"{field}.{path}"
        if path == "name":
            _name(agent.name, where)
        elif path == "description":
            plain_text(agent.description, where, MAX_DESCRIPTION_LENGTH)
        elif path == "system_prompt":
            plain_text(agent.system_prompt, where, MAX_SYSTEM_PROMPT_LENGTH)
        elif path == "model_route":
            _model_route(agent.model_route, where)
        elif path == "tools":
            text_list(agent.tools, where, max_items=MAX_TOOLS, max_length=MAX_TOOL_NAME_LENGTH)
        elif path == "approval_policy":
            _approval_policy(agent.approval_policy, where)
        elif path == "limits":
            _limits(agent.limits, where)
    return agent


def _bounded(value: int, field: str, default: int, maximum: int | None = None) -> int:
    """`default` for 0 (unset), at most `maximum` (`default` when None); a negative one is INVALID_ARGUMENT."""
    if value < 0:
        raise invalid_argument(field, f"{field} must not be negative")
    return min(value or default, default if maximum is None else maximum)


def _update_paths(request: pb.UpdateAgentRequest) -> list[str]:
    """The mask's paths without repeats, in order; empty for an empty mask (all fields)."""
    paths: list[str] = []
    for path in request.update_mask.paths:
        if path not in MUTABLE_FIELDS:
            raise invalid_argument("update_mask", f"update_mask names an unknown or immutable field {path!r}")
        if path not in paths:
            paths.append(path)
    return paths


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, agents: AgentRepository) -> None:
        self._agents = agents

    async def CreateAgent(self, request: pb.CreateAgentRequest, context: Context) -> pb.CreateAgentResponse:
        owner = require_user().user_id
        agent = await self._agents.create(
            owner, _agent(request.agent, "agent"), v.optional_request_id(request.request_id)
        )
        return pb.CreateAgentResponse(agent=agent)

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        owner = require_user().user_id
        if not request.id and request.name:
            if NAME_PATTERN.fullmatch(request.name) is None:  # no agent can have it
                raise not_found("AGENT_NOT_FOUND", "no agent has that name")
            return pb.GetAgentResponse(agent=await self._agents.get_by_name(owner, request.name))
        return pb.GetAgentResponse(agent=await self._agents.get(owner, v.require_id(request.id, "id")))

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Context) -> pb.ListAgentsResponse:
        owner = require_user().user_id
        agents, next_token = await self._agents.list_agents(owner, request.page_token, v.page_size(request.page_size))
        return pb.ListAgentsResponse(agents=agents, next_page_token=next_token)

    async def UpdateAgent(self, request: pb.UpdateAgentRequest, context: Context) -> pb.UpdateAgentResponse:
        owner = require_user().user_id
        v.require_id(request.agent.id, "agent.id")
        paths = _update_paths(request)
        agent = await self._agents.update(owner, _agent(request.agent, "agent", paths or MUTABLE_FIELDS), paths)
        return pb.UpdateAgentResponse(agent=agent)

    async def ApplyAgents(self, request: pb.ApplyAgentsRequest, context: Context) -> pb.ApplyAgentsResponse:
        owner = require_user().user_id
        if len(request.agents) > MAX_APPLIED:
            raise invalid_argument("agents", f"at most {MAX_APPLIED} agents at once")
        names: dict[str, int] = {}
        for index, agent in enumerate(request.agents):
            where = f"agents[{index}]"
            try:
                _agent(agent, where)
            except StewardError as error:
                error.metadata["index"] = str(index)
                raise
            if agent.name in names:
                repeated = invalid_argument(f"{where}.name", f"{where}.name repeats agents[{names[agent.name]}].name")
                repeated.metadata["index"] = str(index)
                raise repeated
            names[agent.name] = index
        results = await self._agents.apply(owner, list(request.agents), request.validate_only)
        return pb.ApplyAgentsResponse(
            results=[pb.AppliedAgent(agent=agent, outcome=_OUTCOMES[outcome]) for agent, outcome in results]
        )

    async def ListAgentModelRoutes(
        self, request: pb.ListAgentModelRoutesRequest, context: Context
    ) -> pb.ListAgentModelRoutesResponse:
        require_service()
        max_routes = _bounded(request.max_routes, "max_routes", MAX_ROUTES_LISTED)
        max_examples = _bounded(request.max_examples, "max_examples", DEFAULT_EXAMPLES, MAX_EXAMPLES)
        uses, truncated = await self._agents.model_routes(max_routes, max_examples)
        return pb.ListAgentModelRoutesResponse(
            routes=[
                pb.AgentModelRoute(
                    model_route=use.model_route,
                    agent_count=use.agents,
                    examples=[
                        pb.AgentModelRouteExample(id=agent_id, name=name, owner_id=owner)
                        for agent_id, name, owner in use.examples
                    ],
                )
                for use in uses
            ],
            truncated=truncated,
        )

    async def DeleteAgent(self, request: pb.DeleteAgentRequest, context: Context) -> pb.DeleteAgentResponse:
        owner = require_user().user_id
        await self._agents.delete(owner, v.require_id(request.id, "id"))
        return pb.DeleteAgentResponse()


def agents_servicer(sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> AgentServicer:
    """The AgentService servicer over `sessions`."""
    return AgentServicer(AgentRepository(sessions, runner))
