"""Agents over HTTP: create, list, read, change and delete, each answer checked by status and reason.

The in-process stack has one HTTP user (the dev token), so another user's agent is made on the real store
over gRPC with that user's internal token, and the gateway must answer it as unknown.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient

from steward.auth import METADATA_KEY, TokenSigner
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.support.gateway_http import answer, refusal
from tests.support.stack import Stack

Client = TestClient[Any, Any]

LIMITS_UNSET = {
    "max_steps": None,
    "max_tokens": None,
    "max_cost_micros": None,
    "timeout_seconds": None,
    "tool_timeout_seconds": None,
    "first_token_timeout_seconds": None,
    "pause_timeout_seconds": None,
}


def _name() -> str:
    return f"agent-{uuid.uuid4().hex[:12]}"


def _full_agent() -> dict[str, Any]:
    return {
        "name": _name(),
        "description": "answers questions about notes",
        "system_prompt": "Be brief.",
        "model_route": "demo",
        "tools": ["notes.*", "time.now"],
        "approval_policy": {
            "mode": "autonomous",
            "auto_approved_tools": ["notes.create_note"],
            "always_confirm_tools": ["notes.delete_note"],
        },
        "limits": {
            "max_steps": 5,
            "max_tokens": 10_000,
            "max_cost_micros": 2_500,
            "timeout_seconds": 90,
            "pause_timeout_seconds": 600,
        },
        "model_params": {
            "temperature": 0.0,
            "max_output_tokens": 512,
            "reasoning_effort": "low",
            "prompt_caching": None,
        },
    }


async def test_an_agent_round_trip(gateway: Client, auth: dict[str, str]) -> None:
    sent = _full_agent()
    created = await answer(await gateway.post("/api/v1/agents", json=sent, headers=auth), 201)
    agent_id = created["id"]
    assert {key: created[key] for key in sent if key != "limits"} == {k: v for k, v in sent.items() if k != "limits"}
    assert created["limits"] == {**LIMITS_UNSET, **sent["limits"]}
    assert created["create_time"] is not None
    assert created["update_time"] is not None
    assert created["version"] == 1
    path = f"/api/v1/agents/{agent_id}"
    assert await answer(await gateway.get(path, headers=auth), 200) == created

    patch = {"description": "changed", "limits": {"max_steps": 2, "tool_timeout_seconds": 1.5}}
    changed = await answer(await gateway.patch(path, json=patch, headers=auth), 200)
    assert changed["description"] == "changed"
    assert changed["limits"] == {**LIMITS_UNSET, "max_steps": 2, "tool_timeout_seconds": 1.5}  # replaced whole
    assert changed["version"] == 2
    untouched = ("name", "system_prompt", "model_route", "tools", "approval_policy", "create_time")
    assert {key: changed[key] for key in untouched} == {key: created[key] for key in untouched}
    echoed = await answer(await gateway.patch(path, json={**changed, "limits": None}, headers=auth), 200)
    assert echoed["limits"] == LIMITS_UNSET  # read-only fields sent back are ignored; null clears
    assert (echoed["version"], echoed["model_params"]) == (3, sent["model_params"])

    assert (await gateway.delete(path, headers=auth)).status == 204
    assert await refusal(await gateway.get(path, headers=auth), 404) == "AGENT_NOT_FOUND"
    assert await refusal(await gateway.delete(path, headers=auth), 404) == "AGENT_NOT_FOUND"
    assert await refusal(await gateway.patch(path, json={"description": "x"}, headers=auth), 404) == "AGENT_NOT_FOUND"


async def test_agents_are_listed_in_pages(gateway: Client, auth: dict[str, str]) -> None:
    for _ in range(3):
        await answer(
            await gateway.post("/api/v1/agents", json={"name": _name(), "model_route": "demo"}, headers=auth), 201
        )
    seen: list[str] = []
    token = ""
    for _ in range(100):
        query = f"?page_size=2&page_token={token}" if token else "?page_size=2"
        page = await answer(await gateway.get(f"/api/v1/agents{query}", headers=auth), 200)
        assert len(page["agents"]) <= 2
        seen += [agent["id"] for agent in page["agents"]]
        if page["next_page_token"] is None:
            break
        token = page["next_page_token"]
    everything = await answer(await gateway.get("/api/v1/agents?page_size=500", headers=auth), 200)
    assert seen == [agent["id"] for agent in everything["agents"]]
    assert len(seen) >= 3


async def test_names_are_unique_and_an_idempotency_key_returns_the_first_agent(
    gateway: Client, auth: dict[str, str]
) -> None:
    body = {"name": _name(), "model_route": "demo"}
    key = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    first = await answer(await gateway.post("/api/v1/agents", json=body, headers=key), 201)
    again = await answer(await gateway.post("/api/v1/agents", json=body, headers=key), 201)
    assert again["id"] == first["id"]
    duplicate = await gateway.post("/api/v1/agents", json=body, headers=auth)
    assert await refusal(duplicate, 409) == "AGENT_ALREADY_EXISTS"
    other = await answer(await gateway.post("/api/v1/agents", json={**body, "name": _name()}, headers=auth), 201)
    renamed = await gateway.patch(f"/api/v1/agents/{other['id']}", json={"name": body["name"]}, headers=auth)
    assert await refusal(renamed, 409) == "AGENT_ALREADY_EXISTS"


@pytest.mark.parametrize(
    "body",
    [
        {"model_route": "demo"},  # no name (the store's check)
        {"name": "Not A Valid Name!", "model_route": "demo"},
        {"name": "ok-name"},  # no model route
        {"name": "ok-name", "model_route": "demo", "system_promt": "typo"},
        {"name": 7, "model_route": "demo"},
        {"name": "ok-name", "model_route": "demo", "tools": "notes.*"},
        {"name": "ok-name", "model_route": "demo", "tools": [1]},
        {"name": "ok-name", "model_route": "demo", "approval_policy": {"mode": "yolo"}},
        {"name": "ok-name", "model_route": "demo", "approval_policy": {"auto_approve": []}},
        {"name": "ok-name", "model_route": "demo", "approval_policy": []},
        {"name": "ok-name", "model_route": "demo", "limits": {"max_steps": -1}},
        {"name": "ok-name", "model_route": "demo", "limits": {"max_steps": True}},
        {"name": "ok-name", "model_route": "demo", "limits": {"max_steps": 2**31}},
        {"name": "ok-name", "model_route": "demo", "limits": {"timeout_seconds": "60"}},
        {"name": "ok-name", "model_route": "demo", "limits": {"timeout": 60}},
    ],
)
async def test_bad_agents_are_refused(gateway: Client, auth: dict[str, str], body: dict[str, Any]) -> None:
    assert await refusal(await gateway.post("/api/v1/agents", json=body, headers=auth), 400) == "INVALID_ARGUMENT"


async def test_bad_changes_are_refused_and_change_nothing(gateway: Client, auth: dict[str, str]) -> None:
    created = await answer(await gateway.post("/api/v1/agents", json=_full_agent(), headers=auth), 201)
    path = f"/api/v1/agents/{created['id']}"
    for body in ({}, {"id": "ignored"}, {"limits": {"max_tokens": -5}}, {"model_route": ""}, {"nme": "x"}):
        assert await refusal(await gateway.patch(path, json=body, headers=auth), 400) == "INVALID_ARGUMENT", body
    malformed = await gateway.patch(path, data=b"{", headers={**auth, "Content-Type": "application/json"})
    assert await refusal(malformed, 400) == "MALFORMED_JSON"
    assert await answer(await gateway.get(path, headers=auth), 200) == created
    assert await refusal(await gateway.get("/api/v1/agents?page_size=-1", headers=auth), 400) == "INVALID_ARGUMENT"


async def test_another_users_agent_is_not_found(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    token = TokenSigner(stack.secret, issuer="tests").mint("someone-else")
    async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
        reply = await store_grpc.AgentServiceStub(channel).CreateAgent(
            store_pb.CreateAgentRequest(agent=agent_pb2.Agent(name=_name(), model_route="demo")),
            metadata=((METADATA_KEY, token),),
        )
    path = f"/api/v1/agents/{reply.agent.id}"
    for response in (
        await gateway.get(path, headers=auth),
        await gateway.patch(path, json={"description": "mine now"}, headers=auth),
        await gateway.delete(path, headers=auth),
    ):
        assert await refusal(response, 404) == "AGENT_NOT_FOUND"
    listed = await answer(await gateway.get("/api/v1/agents?page_size=500", headers=auth), 200)
    assert reply.agent.id not in [agent["id"] for agent in listed["agents"]]
