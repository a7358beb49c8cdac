"""The cross-user matrix, generated from the gateway's route table: user B, given user A's ids, gets 404 (or, from
a list, nothing of A's) and changes nothing of A's. Every route must be classified here: a new route without a
case fails `test_every_route_is_classified`.

A is the dev user; B is a store user with an API token of their own (tests/support/stack.py `store_user_token`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from tests.support.gateway_http import answer
from tests.support.mcp_client import MODES, mcp_client, refused
from tests.support.stack import Stack, runtime_confirmation, store_user_token

Client = TestClient[Any, Any]


@dataclass(frozen=True)
class Mine:
    """A's resources, and a marker text in each that must never reach B."""

    marker: str
    conversation: str
    run: str
    agent: str
    agent_name: str
    confirmation: str
    confirmation_run: str  # the run A's confirmation belongs to
    token: str
    key: str

    def ids(self) -> tuple[str, ...]:
        return (
            self.conversation,
            self.run,
            self.agent,
            self.confirmation,
            self.confirmation_run,
            self.token,
            self.key,
        )


@dataclass(frozen=True)
class Ask:
    """B's request with A's ids, and what B must get: 404, or 200 with nothing of A's (a list). `control`: an id
    of A's that the same request made by A answers with (so the request would find A's data if B could see it)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    status: int = 404
    control: str | None = None


# Routes that take no id of anybody's (they act on the caller's own resources, or on none).
NO_ID = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public; counts by route template, no ids",
    ("GET", "/.well-known/oauth-protected-resource"): "public; RFC 9728 metadata",
    ("GET", "/.well-known/oauth-protected-resource/mcp"): "public; RFC 9728 metadata",
    ("POST", "/mcp"): "MCP: each tool is classified in MCP_NO_ID / MCP_CASES below",
    ("GET", "/mcp"): "MCP: a session's stream (a session answers only its user: tests/gateway/test_mcp.py)",
    ("DELETE", "/mcp"): "MCP: ends a session (idem)",
    ("POST", "/api/v1/conversations"): "creates the caller's own",
    ("GET", "/api/v1/conversations"): "lists the caller's own (checked below: nothing of A's)",
    ("POST", "/api/v1/agents"): "creates the caller's own",
    ("GET", "/api/v1/agents"): "lists the caller's own (checked below)",
    ("POST", "/api/v1/tokens"): "creates the caller's own",
    ("GET", "/api/v1/tokens"): "lists the caller's own (checked below)",
    ("POST", "/api/v1/session"): "signs in with the caller's own token (its user: tests/gateway/test_web_sessions.py)",
    ("GET", "/api/v1/session"): "the session of the request's own cookie, which names no id",
    ("DELETE", "/api/v1/session"): "ends the session of the request's own cookie",
    ("GET", "/v1/models"): "lists the caller's agents (checked below)",
    ("GET", "/api/v1/openapi.json"): "public; the API's description",
    ("GET", "/"): "public; the web app's shell (files, no data)",
    ("GET", "/{app_path}"): "public; the shell at an app path (a deep link): no data",
    ("GET", "/assets/{version}/{path}"): "public; the web app's files",
    ("POST", "/api/v1/keys"): "puts the caller's own",
    ("GET", "/api/v1/keys"): "lists the caller's own (checked below)",
    ("GET", "/api/v1/budget"): "the caller's own",
    ("PUT", "/api/v1/budget"): "the caller's own",
    ("POST", "/api/v1/agents/apply"): "creates or changes the caller's own agents, by name",
    ("GET", "/api/v1/tools"): "the tool catalogue: nobody's data",
    ("GET", "/api/v1/model-routes"): "routes and providers, with the caller's own key scope",
    ("POST", "/api/v1/admin/keys"): "administrators only (B is refused 403: tests/test_real_model_doc.py)",
    ("GET", "/api/v1/admin/keys"): "administrators only; instance keys are nobody's",
    ("GET", "/api/v1/admin/orphaned-agents"): "administrators only (tests/gateway/test_route_orphans.py)",
}

# Every route that takes an id (in its path, query or body): B's request with A's id.
# Each case is given A's resources and a conversation of B's own (for requests that mix the two).
CASES: dict[tuple[str, str], Callable[[Mine, str], list[Ask]]] = {
    ("GET", "/api/v1/conversations/{conversation_id}"): lambda a, _b: [
        Ask("GET", f"/api/v1/conversations/{a.conversation}")
    ],
    ("DELETE", "/api/v1/conversations/{conversation_id}"): lambda a, _b: [
        Ask("DELETE", f"/api/v1/conversations/{a.conversation}")
    ],
    ("GET", "/api/v1/conversations/{conversation_id}/messages"): lambda a, _b: [
        Ask("GET", f"/api/v1/conversations/{a.conversation}/messages")
    ],
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): lambda a, _b: [
        Ask("POST", f"/api/v1/conversations/{a.conversation}/messages", {"content": "from B"})
    ],
    ("GET", "/api/v1/runs/{run_id}"): lambda a, _b: [Ask("GET", f"/api/v1/runs/{a.run}")],
    ("POST", "/api/v1/runs/{run_id}/cancel"): lambda a, _b: [Ask("POST", f"/api/v1/runs/{a.run}/cancel")],
    ("POST", "/api/v1/runs/{run_id}/tool_results"): lambda a, _b: [
        Ask("POST", f"/api/v1/runs/{a.run}/tool_results", {"results": [{"tool_call_id": "c", "content": "x"}]})
    ],
    ("GET", "/api/v1/runs/{run_id}/events"): lambda a, _b: [Ask("GET", f"/api/v1/runs/{a.run}/events")],
    ("GET", "/api/v1/runs"): lambda a, _b: [Ask("GET", f"/api/v1/runs?conversation_id={a.conversation}", status=200)],
    ("POST", "/api/v1/runs"): lambda a, b: [
        Ask("POST", "/api/v1/runs", {"conversation_id": a.conversation, "content": "from B"}),
        Ask("POST", "/api/v1/runs", {"conversation_id": b, "agent_id": a.agent, "content": "from B"}),
    ],
    ("GET", "/api/v1/agents/{agent_id}"): lambda a, _b: [Ask("GET", f"/api/v1/agents/{a.agent}")],
    ("PATCH", "/api/v1/agents/{agent_id}"): lambda a, _b: [
        Ask("PATCH", f"/api/v1/agents/{a.agent}", {"description": "changed by B"})
    ],
    ("DELETE", "/api/v1/agents/{agent_id}"): lambda a, _b: [Ask("DELETE", f"/api/v1/agents/{a.agent}")],
    ("GET", "/api/v1/confirmations"): lambda a, _b: [
        Ask("GET", f"/api/v1/confirmations?run_id={a.confirmation_run}", status=200, control=a.confirmation),
        Ask("GET", "/api/v1/confirmations", status=200, control=a.confirmation),
        Ask("GET", f"/api/v1/confirmations?run_id={a.run}", status=200),
    ],
    ("GET", "/api/v1/confirmations/{confirmation_id}"): lambda a, _b: [
        Ask("GET", f"/api/v1/confirmations/{a.confirmation}")
    ],
    ("POST", "/api/v1/confirmations/{confirmation_id}/decision"): lambda a, _b: [
        Ask("POST", f"/api/v1/confirmations/{a.confirmation}/decision", {"decision": {"outcome": "approve"}})
    ],
    ("DELETE", "/api/v1/tokens/{token_id}"): lambda a, _b: [Ask("DELETE", f"/api/v1/tokens/{a.token}")],
    ("DELETE", "/api/v1/keys/{key_id}"): lambda a, _b: [Ask("DELETE", f"/api/v1/keys/{a.key}")],
    ("GET", "/api/v1/usage/records"): lambda a, _b: [
        Ask("GET", f"/api/v1/usage/records?run_id={a.run}", status=200),
        Ask("GET", f"/api/v1/usage/records?agent_id={a.agent}", status=200),
    ],
    ("GET", "/api/v1/usage/summary"): lambda a, _b: [
        Ask("GET", f"/api/v1/usage/summary?run_id={a.run}&group_by=run,agent", status=200)
    ],
    ("GET", "/api/v1/agents/{agent_id}/budget"): lambda a, _b: [Ask("GET", f"/api/v1/agents/{a.agent}/budget")],
    ("PUT", "/api/v1/agents/{agent_id}/budget"): lambda a, _b: [
        Ask("PUT", f"/api/v1/agents/{a.agent}/budget", {"limit_micros": 1, "period": "day"})
    ],
    ("GET", "/api/v1/runs/{run_id}/budget"): lambda a, _b: [Ask("GET", f"/api/v1/runs/{a.run}/budget")],
    ("GET", "/api/v1/agents/{agent_id}/tools"): lambda a, _b: [Ask("GET", f"/api/v1/agents/{a.agent}/tools")],
    ("GET", "/api/v1/confirmations/{confirmation_id}/audit"): lambda a, _b: [
        Ask("GET", f"/api/v1/confirmations/{a.confirmation}/audit")
    ],
    ("GET", "/api/v1/runs/{run_id}/audit"): lambda a, _b: [Ask("GET", f"/api/v1/runs/{a.run}/audit")],
    ("DELETE", "/api/v1/admin/keys/{key_id}"): lambda a, _b: [Ask("DELETE", f"/api/v1/admin/keys/{a.key}", status=403)],
    ("GET", "/v1/models/{model}"): lambda a, _b: [Ask("GET", f"/v1/models/{a.agent_name}")],
    ("POST", "/v1/chat/completions"): lambda a, _b: [
        Ask("POST", "/v1/chat/completions", {"model": a.agent_name, "messages": [{"role": "user", "content": "x"}]})
    ],
}


def _routes(stack: Stack) -> set[tuple[str, str]]:
    app = create_app(stack.gateway_settings())
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if route.method != "HEAD" and isinstance(path, str):
            found.add((route.method, path))
    return found


def test_every_route_is_classified(stack: Stack) -> None:
    routes = _routes(stack)
    assert len(routes) > 20  # the walk still finds the routes
    unclassified = routes - NO_ID.keys() - CASES.keys()
    assert unclassified == set(), f"add a cross-user case for {sorted(unclassified)}"
    assert (NO_ID.keys() | CASES.keys()) - routes == set()  # no case for a route that is gone


@pytest.fixture(scope="module")
async def mine(stack: Stack, gateway: Client) -> Mine:
    a = {"Authorization": f"Bearer {stack.dev_token}"}
    marker = f"a-secret-{uuid.uuid4().hex}"
    conversation = await answer(await gateway.post("/api/v1/conversations", json={"title": marker}, headers=a), 201)
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    started = await answer(await gateway.post(path, json={"content": marker}, headers=a), 202)
    agent_body = {"name": marker[:40], "description": marker, "model_route": "demo"}
    agent = await answer(await gateway.post("/api/v1/agents", json=agent_body, headers=a), 201)
    token = await answer(await gateway.post("/api/v1/tokens", json={"label": marker}, headers=a), 201)
    confirmation = await runtime_confirmation(stack)
    key_body = {"provider": "anthropic", "secret": f"sk-{uuid.uuid4().hex}", "label": marker}
    key = await answer(await gateway.post("/api/v1/keys", json=key_body, headers=a), 200)
    run = started["run"]["id"]
    return Mine(
        marker,
        conversation["id"],
        run,
        agent["id"],
        agent["name"],
        confirmation.id,
        confirmation.run_id,
        token["id"],
        key["id"],
    )


async def _untouched(stack: Stack, gateway: Client, mine: Mine) -> None:
    """A still sees every one of A's resources as it was."""
    a = {"Authorization": f"Bearer {stack.dev_token}"}
    conversation = await answer(await gateway.get(f"/api/v1/conversations/{mine.conversation}", headers=a), 200)
    assert conversation["title"] == mine.marker
    messages = await answer(await gateway.get(f"/api/v1/conversations/{mine.conversation}/messages", headers=a), 200)
    assert all("from B" not in str(message) for message in messages["messages"])
    runs = await answer(await gateway.get(f"/api/v1/runs?conversation_id={mine.conversation}", headers=a), 200)
    assert [run["id"] for run in runs["runs"]] == [mine.run]
    agent = await answer(await gateway.get(f"/api/v1/agents/{mine.agent}", headers=a), 200)
    assert agent["description"] == mine.marker
    confirmation = await answer(await gateway.get(f"/api/v1/confirmations/{mine.confirmation}", headers=a), 200)
    assert confirmation["state"] == "pending"
    tokens = await answer(await gateway.get("/api/v1/tokens", headers=a), 200)
    assert [token["state"] for token in tokens["tokens"] if token["id"] == mine.token] == ["active"]
    keys = await answer(await gateway.get("/api/v1/keys", headers=a), 200)
    assert [key["label"] for key in keys["keys"] if key["id"] == mine.key] == [mine.marker]
    budget = await answer(await gateway.get(f"/api/v1/agents/{mine.agent}/budget", headers=a), 200)
    assert budget["limit_micros"] == 0  # B's PUT did not set it


@pytest.mark.parametrize("route", sorted(CASES), ids=" ".join)
async def test_b_with_as_ids_gets_nothing_of_as_and_changes_nothing(
    stack: Stack, gateway: Client, mine: Mine, route: tuple[str, str]
) -> None:
    b = {"Authorization": f"Bearer {await store_user_token(stack)}"}
    a = {"Authorization": f"Bearer {stack.dev_token}"}
    theirs = await answer(await gateway.post("/api/v1/conversations", json={"title": "B's"}, headers=b), 201)
    for ask in CASES[route](mine, theirs["id"]):
        if ask.control is not None:  # the same request as A finds A's data
            assert ask.control in str(await answer(await gateway.request(ask.method, ask.path, headers=a), 200)), ask
        response = await gateway.request(ask.method, ask.path, json=ask.body, headers=b)
        text = await response.text()
        assert response.status == ask.status, (ask, text)
        assert mine.marker not in text, ask
        if ask.status == 200:  # a list: none of A's ids either
            for own in mine.ids():
                assert own not in text, ask
    await _untouched(stack, gateway, mine)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/conversations",
        "/api/v1/agents",
        "/api/v1/tokens",
        "/v1/models",
        "/api/v1/keys",
        "/api/v1/usage/records",
    ],
)
async def test_bs_lists_hold_nothing_of_as(stack: Stack, gateway: Client, mine: Mine, path: str) -> None:
    b = {"Authorization": f"Bearer {await store_user_token(stack)}"}
    text = await answer(await gateway.get(path, headers=b), 200)
    for own in (mine.marker[:40], mine.conversation, mine.agent, mine.token, mine.key, mine.run):
        assert own not in str(text)


# MCP tools (gateway/mcp, listed by the MCP SDK's client from /mcp) that take no id of anybody's.
MCP_NO_ID = {"list_agents": "lists the caller's own agents (checked below: nothing of A's)"}


@dataclass(frozen=True)
class ToolAsk:
    """B's MCP tool call with A's ids, and what B must get: a tool error with `reason` (None: a result holding
    nothing of A's)."""

    arguments: dict[str, Any]
    reason: str | None
    control: str | None = None  # an id of A's that the same call made by A answers with


# Every MCP tool that takes an id: B's calls with A's ids (and B's own conversation, for calls that mix the two).
MCP_CASES: dict[str, Callable[[Mine, str], list[ToolAsk]]] = {
    "chat": lambda a, b: [
        ToolAsk({"message": "from B", "conversation_id": a.conversation}, "CONVERSATION_NOT_FOUND"),
        ToolAsk({"message": "from B", "agent": a.agent}, "AGENT_NOT_FOUND"),
        ToolAsk({"message": "from B", "agent": a.agent_name, "conversation_id": b}, "AGENT_NOT_FOUND"),
    ],
    "get_run": lambda a, _b: [ToolAsk({"run_id": a.run}, "RUN_NOT_FOUND")],
    "list_pending_confirmations": lambda a, _b: [
        ToolAsk({"run_id": a.confirmation_run}, None, control=a.confirmation),
        ToolAsk({}, None, control=a.confirmation),
        ToolAsk({"run_id": a.run}, None),
    ],
    "decide_confirmation": lambda a, _b: [
        ToolAsk({"confirmation_id": a.confirmation, "outcome": "approve"}, "CONFIRMATION_NOT_FOUND"),
        ToolAsk(
            {"confirmation_id": a.confirmation, "outcome": "reject", "wait_for_run": False}, "CONFIRMATION_NOT_FOUND"
        ),
    ],
}


async def test_every_mcp_tool_is_classified(stack: Stack, gateway: Client) -> None:
    async with mcp_client(str(gateway.make_url("/mcp")), stack.dev_token) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
    assert len(tools) >= 5  # the listing still finds the tools
    unclassified = tools - MCP_NO_ID.keys() - MCP_CASES.keys()
    assert unclassified == set(), f"add a cross-user case for the MCP tools {sorted(unclassified)}"
    assert (MCP_NO_ID.keys() | MCP_CASES.keys()) - tools == set()  # no case for a tool that is gone


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", sorted(MCP_CASES))
async def test_b_with_as_ids_gets_nothing_of_as_over_mcp(
    stack: Stack, gateway: Client, mine: Mine, tool: str, mode: str
) -> None:
    token = await store_user_token(stack)
    theirs = await answer(
        await gateway.post(
            "/api/v1/conversations", json={"title": "B's"}, headers={"Authorization": f"Bearer {token}"}
        ),
        201,
    )
    async with (
        mcp_client(str(gateway.make_url("/mcp")), stack.dev_token, mode) as as_a,
        mcp_client(str(gateway.make_url("/mcp")), token, mode) as client,
    ):
        for ask in MCP_CASES[tool](mine, theirs["id"]):
            if ask.control is not None:  # the same call as A finds A's data
                assert ask.control in (await as_a.call_tool(tool, ask.arguments)).model_dump_json(), ask
            result = await client.call_tool(tool, ask.arguments)
            text = result.model_dump_json()
            assert mine.marker not in text, ask
            if ask.reason is not None:
                assert refused(result) == ask.reason, (ask, text)
                continue
            assert not result.is_error, (ask, text)
            for own in mine.ids():
                if own not in str(ask.arguments.values()):
                    assert own not in text, ask
    await _untouched(stack, gateway, mine)


async def test_bs_mcp_agent_list_holds_nothing_of_as(stack: Stack, gateway: Client, mine: Mine) -> None:
    async with mcp_client(str(gateway.make_url("/mcp")), await store_user_token(stack)) as client:
        text = (await client.call_tool("list_agents", {})).model_dump_json()
    for own in (mine.marker[:40], mine.conversation, mine.agent, mine.run, mine.confirmation):
        assert own not in text
