"""Tools: what an agent may call, and every tool the deployment knows, over the runtime's RuntimeService.

The gateway holds no tool registry: the runtime does (built-in tools and the MCP servers of its tools file), so
both routes ask it (`ListTools`, `ListToolCatalog`). An agent's list is classified under its approval policy in
its own mode; the catalogue under no agent's policy (annotations and server trust alone). Each tool says whether it
reads or writes, whether a call waits for a person, and why (`reason`, a stable code, and `explanation`, a
sentence). `GET /api/v1/agents/steward/tools` lists the default agent's tools: "steward" names the caller's agent of
that name when there is one, else the built-in default agent, as it does when a run names it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.app_keys import CLIENTS
from steward.agents import DEFAULT_AGENT_NAME
from steward.errors import Reason, StewardError
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

_KINDS = {runtime_pb.TOOL_KIND_READ: "read", runtime_pb.TOOL_KIND_WRITE: "write", runtime_pb.TOOL_KIND_CLIENT: "client"}
_STATUSES = {
    runtime_pb.TOOL_SERVER_STATUS_CONNECTED: "connected",
    runtime_pb.TOOL_SERVER_STATUS_UNAVAILABLE: "unavailable",
}
# What each classification reason (services/runtime/tools/classify.py) means, for people.
_EXPLANATIONS = {
    "read_only": "it only reads: {source} marks it read-only, so it runs at once",
    "write": "it may change something ({source} does not mark it read-only), so each call waits for a person",
    "untrusted_server": "{source} is not trusted, so its annotations are ignored and every call waits for a person",
    "always_confirm": "the agent's approval policy lists it in always_confirm_tools: every call waits for a person",
    "auto_approved": "a write the agent's approval policy auto-approves in autonomous mode: it runs unconfirmed",
    "client": "the caller runs it: the run pauses until its result is submitted",
}


def _explanation(tool: runtime_pb.Tool) -> str:
    source = f"its server {tool.server!r}" if tool.server else "the built-in tool"
    template = _EXPLANATIONS.get(tool.reason)
    return template.format(source=source) if template else "unclassified: treated as a write"


def tool_json(tool: runtime_pb.Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": json.loads(tool.input_schema_json or "{}"),
        "kind": _KINDS.get(tool.kind, "write"),
        "needs_confirmation": tool.needs_confirmation,
        "destructive": tool.destructive,
        "idempotent": tool.idempotent,
        "reason": tool.reason or None,
        "explanation": _explanation(tool),
        "server": tool.server or None,
    }


async def _agent_id(request: web.Request) -> str:
    """The id ListTools takes: the path's, or for "steward" the caller's agent of that name, else "" (default)."""
    agent_id = request.match_info["agent_id"]
    if agent_id != DEFAULT_AGENT_NAME:
        return agent_id
    try:
        reply = await request.app[CLIENTS].agents.GetAgent(store_pb.GetAgentRequest(name=DEFAULT_AGENT_NAME))
    except StewardError as error:
        if error.reason != Reason.AGENT_NOT_FOUND:
            raise
        return ""
    return reply.agent.id


@routes.get("/api/v1/agents/{agent_id}/tools")
async def list_agent_tools(request: web.Request) -> web.Response:
    """The tools the agent may call, classified under its approval policy."""
    reply = await request.app[CLIENTS].runtime.ListTools(runtime_pb.ListToolsRequest(agent_id=await _agent_id(request)))
    return web.json_response({"tools": [tool_json(tool) for tool in reply.tools]})


@routes.get("/api/v1/tools")
async def list_tools(request: web.Request) -> web.Response:
    """Every tool the deployment knows, and its MCP servers with their status."""
    reply = await request.app[CLIENTS].runtime.ListToolCatalog(runtime_pb.ListToolCatalogRequest())
    return web.json_response(
        {
            "tools": [tool_json(tool) for tool in reply.tools],
            "servers": [
                {
                    "name": server.name,
                    "trusted": server.trusted,
                    "status": _STATUSES.get(server.status, "unavailable"),
                    "tool_count": server.tool_count,
                }
                for server in reply.servers
            ],
        }
    )
