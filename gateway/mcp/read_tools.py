"""The MCP tools that only read: list_agents, list_pending_confirmations, get_run.

Every call acts as the authenticated caller (the services scope each query by that principal), so another
user's id answers as an unknown one: a tool result with `isError` and the `*_NOT_FOUND` reason. Reading a run
that failed is a successful read: get_run answers it without `isError` (its `state` and `run.error` say so).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gateway import presenters
from gateway.mcp.run_outcomes import confirmation_data, logged_answer, pending_confirmations, read_run, run_data
from gateway.mcp.tooling import Answer, Arguments, Call, ToolDef, ToolError, read_only
from steward.agents import DEFAULT_AGENT_NAME
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

MAX_ID = 64
MAX_TOKEN = 1024
MAX_AGENT_PAGES = 20


def agent_data(agent: agent_pb2.Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "description": agent.description,
        "model_route": agent.model_route,
        "tools": list(agent.tools),
    }


async def find_agent(call: Call, ref: str) -> agent_pb2.Agent | None:
    """The caller's agent with this name or id; None for the built-in default agent (`steward`, unless the caller
    has an agent of that name). Raises AGENT_NOT_FOUND for any other name or id, another user's included."""
    token = ""
    for _ in range(MAX_AGENT_PAGES):
        reply = await call.clients.agents.ListAgents(
            store_pb.ListAgentsRequest(page_size=500, page_token=token), timeout=call.timeout
        )
        for agent in reply.agents:
            if ref in (agent.name, agent.id):
                return agent
        token = reply.next_page_token
        if not token:
            break
    if ref == DEFAULT_AGENT_NAME:
        return None
    raise ToolError("AGENT_NOT_FOUND", f"you have no agent named {ref!r} or with that id; list_agents shows them")


class ListAgentsArguments(Arguments):
    page_size: int = Field(50, ge=1, le=500, description="The most agents to return.")
    page_token: str = Field("", max_length=MAX_TOKEN, description="next_page_token of the previous page.")


async def list_agents(call: Call, args: ListAgentsArguments) -> Answer:
    reply = await call.clients.agents.ListAgents(
        store_pb.ListAgentsRequest(page_size=args.page_size, page_token=args.page_token), timeout=call.timeout
    )
    agents = [agent_data(agent) for agent in reply.agents]
    return Answer(
        {"agents": agents, "next_page_token": reply.next_page_token or None, "default_agent": DEFAULT_AGENT_NAME}
    )


class ListPendingArguments(Arguments):
    run_id: str = Field("", max_length=MAX_ID, description="Only this run's confirmations; empty for all runs.")
    page_size: int = Field(50, ge=1, le=200, description="The most confirmations to return.")
    page_token: str = Field("", max_length=MAX_TOKEN, description="next_page_token of the previous page.")


async def list_pending_confirmations(call: Call, args: ListPendingArguments) -> Answer:
    reply = await call.clients.confirm.ListConfirmations(
        confirm_pb.ListConfirmationsRequest(page_size=args.page_size, page_token=args.page_token, run_id=args.run_id),
        timeout=call.timeout,
    )
    confirmations = [confirmation_data(c) for c in reply.confirmations]
    return Answer({"confirmations": confirmations, "next_page_token": reply.next_page_token or None})


class GetRunArguments(Arguments):
    run_id: str = Field(min_length=1, max_length=MAX_ID, description="The run's id (chat answers with it).")


async def get_run(call: Call, args: GetRunArguments) -> Answer:
    run = await read_run(call, args.run_id)
    data: dict[str, Any] = {**run_data(run), "run": presenters.run_json(run)}
    pending = await pending_confirmations(call, run.id) if run.state == run_pb2.RUN_STATE_PAUSED else []
    data["pending_confirmations"] = [confirmation_data(c) for c in pending]
    data["answer"] = await logged_answer(call, run)
    return Answer(data)


TOOLS = [
    ToolDef(
        name="list_agents",
        scope="agents:read",
        title="List agents",
        description=(
            "List your Steward agents (id, name, description, model route, tools). Chat with one by name or id; "
            f"`{DEFAULT_AGENT_NAME}` is the built-in default agent."
        ),
        arguments=ListAgentsArguments,
        annotations=read_only("List agents"),
        run=list_agents,
    ),
    ToolDef(
        name="list_pending_confirmations",
        scope="confirmations:read",
        title="List pending confirmations",
        description=(
            "List the writes waiting for your decision (newest first): the tool an agent wants to call, its "
            "arguments and a preview of the change, and when it expires. Decide one with decide_confirmation."
        ),
        arguments=ListPendingArguments,
        annotations=read_only("List pending confirmations"),
        run=list_pending_confirmations,
    ),
    ToolDef(
        name="get_run",
        scope="runs:read",
        title="Get a run",
        description=(
            "Read a run: its state (queued, running, paused, completed, failed, ...), usage, the confirmations it "
            "waits for, and, once it is paused or ended, everything it answered."
        ),
        arguments=GetRunArguments,
        annotations=read_only("Get a run"),
        run=get_run,
    ),
]
