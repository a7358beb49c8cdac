"""Agents: /api/v1/agents[/{id}], over the store's AgentService.

An agent's JSON (see `presenters.agent_json`) uses the same field names on the
way in. POST takes the whole agent; PATCH changes only the fields its body
names, each replaced whole (`approval_policy`, `limits` and `model_params`
included). `id`, `version` and the times are read-only and ignored in bodies, so a client may send back what
it read; any other unknown field is refused, so a misspelt one is not lost.
The OpenAPI document (`AgentIn`, checked before the handler) gives the JSON
types and bounds; the store checks names, patterns and lengths. A model route
the provider does not know is refused here, before the store sees it (400
MODEL_NOT_FOUND naming the routes there are; `gateway.routes.models`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf.field_mask_pb2 import FieldMask

from gateway import presenters
from gateway.app_keys import CLIENTS
from gateway.bodies import field_error, idempotency_key, json_object, model_params, page, run_limits, run_mode
from gateway.routes.models import check_model_route
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

# The fields a body may set, in the order of the store's update mask paths.
MUTABLE = ("name", "description", "system_prompt", "model_route", "tools", "approval_policy", "limits", "model_params")


def _policy(body: dict[str, Any]) -> agent_pb2.ApprovalPolicy:
    policy = body.get("approval_policy") or {}
    return agent_pb2.ApprovalPolicy(
        mode=run_mode(policy.get("mode")),
        auto_approved_tools=policy.get("auto_approved_tools") or [],
        always_confirm_tools=policy.get("always_confirm_tools") or [],
    )


def _agent(body: dict[str, Any], agent_id: str = "") -> tuple[agent_pb2.Agent, list[str]]:
    """The agent the body describes, and the fields it names (absent fields keep their zero values)."""
    agent = agent_pb2.Agent(
        id=agent_id,
        name=body.get("name") or "",
        description=body.get("description") or "",
        system_prompt=body.get("system_prompt") or "",
        model_route=body.get("model_route") or "",
        tools=body.get("tools") or [],
        approval_policy=_policy(body),
        limits=run_limits(body.get("limits")),
        model_params=model_params(body.get("model_params")),
    )
    return agent, [name for name in MUTABLE if name in body]


@routes.post("/api/v1/agents")
async def create_agent(request: web.Request) -> web.Response:
    """Create an agent; an `Idempotency-Key` makes a retry return the agent instead of a second one."""
    agent, _ = _agent(await json_object(request))
    if agent.model_route:
        await check_model_route(request, agent.model_route)
    reply = await request.app[CLIENTS].agents.CreateAgent(
        store_pb.CreateAgentRequest(agent=agent, request_id=idempotency_key(request))
    )
    return web.json_response(presenters.agent_json(reply.agent), status=201)


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].agents.ListAgents(
        store_pb.ListAgentsRequest(page_size=page_size, page_token=page_token)
    )
    return web.json_response(
        {
            "agents": [presenters.agent_json(agent) for agent in reply.agents],
            "next_page_token": reply.next_page_token or None,
        }
    )


@routes.get("/api/v1/agents/{agent_id}")
async def get_agent(request: web.Request) -> web.Response:
    reply = await request.app[CLIENTS].agents.GetAgent(store_pb.GetAgentRequest(id=request.match_info["agent_id"]))
    return web.json_response(presenters.agent_json(reply.agent))


@routes.patch("/api/v1/agents/{agent_id}")
async def update_agent(request: web.Request) -> web.Response:
    """Change the fields the body names. An empty mask would mean "every field" to the store, so a body
    naming none is refused rather than clearing the agent."""
    agent, paths = _agent(await json_object(request), request.match_info["agent_id"])
    if not paths:  # stays: "at least one of these fields" (read-only `id` may still be there) is not in the document
        raise field_error("body", f"must name at least one of {', '.join(MUTABLE)}")
    if "model_route" in paths and agent.model_route:
        await check_model_route(request, agent.model_route)
    reply = await request.app[CLIENTS].agents.UpdateAgent(
        store_pb.UpdateAgentRequest(agent=agent, update_mask=FieldMask(paths=paths))
    )
    return web.json_response(presenters.agent_json(reply.agent))


@routes.delete("/api/v1/agents/{agent_id}")
async def delete_agent(request: web.Request) -> web.Response:
    await request.app[CLIENTS].agents.DeleteAgent(store_pb.DeleteAgentRequest(id=request.match_info["agent_id"]))
    return web.Response(status=204)
