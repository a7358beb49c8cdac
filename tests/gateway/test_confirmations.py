"""Confirmations through the gateway: list, get, decide, and bad decisions refused with a stable reason.

The confirmation is made as the runtime makes it (CreateConfirmation as `service:runtime` acting for the
gateway's dev user) on the real confirm service; every refused decision leaves it exactly as it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.stack import Stack, runtime_confirmation

Client = TestClient[Any, Any]
DEV_USER = "dev-user"
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}


async def _decide(gateway: Client, auth: dict[str, str], confirmation_id: str, body: object) -> Any:
    return await gateway.post(f"/api/v1/confirmations/{confirmation_id}/decision", json=body, headers=auth)


async def _state(gateway: Client, auth: dict[str, str], confirmation_id: str) -> dict[str, Any]:
    response = await gateway.get(f"/api/v1/confirmations/{confirmation_id}", headers=auth)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_a_pending_confirmation_is_listed_and_decided_once(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    confirmation = await runtime_confirmation(stack)
    listed = await (await gateway.get("/api/v1/confirmations", headers=auth)).json()
    assert confirmation.id in [c["id"] for c in listed["confirmations"]]
    shown = await _state(gateway, auth, confirmation.id)
    assert (shown["state"], shown["tool_name"], shown["arguments"]) == (
        "pending",
        "notes.create_note",
        {"title": "Groceries"},
    )
    decision = {"outcome": "approve", "reason": "fine"}
    body = {"decision": decision, "expected_arguments_hash": shown["arguments_hash"]}
    first = await _decide(gateway, auth, confirmation.id, body)
    assert first.status == 200, await first.text()
    decided = await first.json()
    assert decided["state"] == "approved"
    assert decided["decision"]["decided_by"] == DEV_USER
    assert decided["decision"]["surface"] == "api"
    again = await _decide(gateway, auth, confirmation.id, body)  # the same decision again: idempotent
    assert again.status == 200
    assert (await again.json())["decision"] == decided["decision"]
    pending = await (await gateway.get("/api/v1/confirmations", headers=auth)).json()
    assert confirmation.id not in [c["id"] for c in pending["confirmations"]]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"decision": {"outcome": "maybe"}}, 422, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "extra": 1}}, 422, "DECISION_INVALID"),
        ({"decision": {"outcome": "approve", "edited_arguments": "not an object"}}, 422, "DECISION_INVALID"),
        ({"decision": "approve"}, 400, "INVALID_ARGUMENT"),
        ({"decision": {"outcome": "approve"}, "expected_arguments_hash": "0" * 64}, 400, "ARGUMENTS_MISMATCH"),
    ],
)
async def test_bad_decisions_are_refused_and_change_nothing(
    stack: Stack, gateway: Client, auth: dict[str, str], body: object, status: int, reason: str
) -> None:
    confirmation = await runtime_confirmation(stack)
    before = await _state(gateway, auth, confirmation.id)
    response = await _decide(gateway, auth, confirmation.id, body)
    assert response.status == status, await response.text()
    assert (await response.json())["reason"] == reason
    assert await _state(gateway, auth, confirmation.id) == before


async def test_a_second_different_decision_is_refused(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    confirmation = await runtime_confirmation(stack)
    assert (await _decide(gateway, auth, confirmation.id, {"decision": {"outcome": "reject"}})).status == 200
    decided = await _state(gateway, auth, confirmation.id)
    response = await _decide(gateway, auth, confirmation.id, {"decision": {"outcome": "approve"}})
    assert response.status == 409  # a conflict with the confirmation's state, by reason
    assert (await response.json())["reason"] == "CONFIRMATION_ALREADY_DECIDED"
    assert await _state(gateway, auth, confirmation.id) == decided


async def test_another_users_confirmation_is_not_found(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    theirs = await runtime_confirmation(stack, user="someone-else")
    for response in (
        await gateway.get(f"/api/v1/confirmations/{theirs.id}", headers=auth),
        await _decide(gateway, auth, theirs.id, {"decision": {"outcome": "approve"}}),
    ):
        assert response.status == 404
        assert (await response.json())["reason"] == "CONFIRMATION_NOT_FOUND"
    listed = await (await gateway.get("/api/v1/confirmations?state=all", headers=auth)).json()
    assert theirs.id not in [c["id"] for c in listed["confirmations"]]


async def test_an_expired_confirmation_cannot_be_decided(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    confirmation = await runtime_confirmation(stack, ttl_seconds=1)
    await asyncio.sleep(1.2)
    response = await _decide(gateway, auth, confirmation.id, {"decision": {"outcome": "approve"}})
    assert response.status == 409  # a conflict with the confirmation's state, by reason
    assert (await response.json())["reason"] == "CONFIRMATION_EXPIRED"
    assert (await _state(gateway, auth, confirmation.id))["state"] == "expired"


async def test_an_unknown_state_filter_is_a_400(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.get("/api/v1/confirmations?state=sideways", headers=auth)
    assert response.status == 400
    assert (await response.json())["reason"] == "INVALID_ARGUMENT"
