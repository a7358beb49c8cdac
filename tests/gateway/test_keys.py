"""Provider keys, usage and budgets over HTTP, through the real stack: keys are write-only (a canary secret
reaches no response and no log line), usage records and sums come from real runs of the demo model, and
budgets are the caller's own.

Each test acts as a brand-new store user, so the keys and budgets it sets touch no other test's runs.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from tests.support.gateway_http import answer, refusal
from tests.support.sse import read_sse
from tests.support.stack import Stack, store_user_token

Client = TestClient[Any, Any]


async def _user(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {await store_user_token(stack)}"}


async def _finished_run(gateway: Client, user: dict[str, str], **run: Any) -> dict[str, Any]:
    """A run of the demo model, read to its end."""
    conversation = await answer(await gateway.post("/api/v1/conversations", json={}, headers=user), 201)
    body = {"conversation_id": conversation["id"], "content": "Hello, usage", **run}
    started = await answer(await gateway.post("/api/v1/runs", json=body, headers=user), 202)
    events = await read_sse(gateway, started["events_url"], user)
    assert events[-1].event == "run_completed", events[-1]
    finished: dict[str, Any] = started["run"]
    return finished


async def test_a_key_is_put_listed_replaced_and_deleted_without_its_secret(stack: Stack, gateway: Client) -> None:
    user = await _user(stack)
    secret = f"sk-first-{uuid.uuid4().hex}"
    put = await answer(
        await gateway.post(
            "/api/v1/keys", json={"provider": "anthropic", "secret": secret, "label": "work"}, headers=user
        ),
        200,
    )
    assert {k: put[k] for k in ("provider", "label", "last4", "scope")} == {
        "provider": "anthropic",
        "label": "work",
        "last4": secret[-4:],
        "scope": "user",
    }
    assert put["create_time"]
    assert "secret" not in put
    listed = await answer(await gateway.get("/api/v1/keys", headers=user), 200)
    assert listed == {"keys": [put], "next_page_token": None}

    second = f"sk-second-{uuid.uuid4().hex}"
    replaced = await answer(
        await gateway.post("/api/v1/keys", json={"provider": "anthropic", "secret": second}, headers=user), 200
    )
    assert (replaced["id"], replaced["last4"], replaced["label"]) == (put["id"], second[-4:], "")
    short = await answer(
        await gateway.post("/api/v1/keys", json={"provider": "openai", "secret": "sk-abc"}, headers=user), 200
    )
    assert short["last4"] is None  # a short secret is never shown, not even in part
    listed = await answer(await gateway.get("/api/v1/keys", headers=user), 200)
    assert [key["provider"] for key in listed["keys"]] == ["anthropic", "openai"]

    response = await gateway.delete(f"/api/v1/keys/{put['id']}", headers=user)
    assert response.status == 204
    assert await refusal(await gateway.delete(f"/api/v1/keys/{put['id']}", headers=user), 404) == "KEY_NOT_FOUND"
    listed = await answer(await gateway.get("/api/v1/keys", headers=user), 200)
    assert [key["id"] for key in listed["keys"]] == [short["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"secret": "sk-x"}, "provider"),
        ({"provider": "anthropic"}, "secret"),
        ({"provider": "anthropic", "secret": ""}, "secret"),
        ({"provider": "Anthropic!", "secret": "sk-x"}, "provider"),
        ({"provider": "anthropic", "secret": 42}, "secret"),
        ({"provider": "anthropic", "secret": "sk-x", "scope": "instance"}, "scope"),  # only one's own keys here
        ({"provider": "anthropic", "secret": "sk-x", "label": "x" * 201}, "label"),
    ],
)
async def test_bad_key_puts_are_400_naming_the_field(
    stack: Stack, gateway: Client, body: dict[str, Any], field: str
) -> None:
    response = await gateway.post("/api/v1/keys", json=body, headers=await _user(stack))
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert (await response.json())["metadata"]["field"] == field


async def test_a_canary_key_appears_in_no_response_and_no_log_line(
    stack: Stack, gateway: Client, caplog: pytest.LogCaptureFixture
) -> None:
    user = await _user(stack)
    canary = f"sk-canary-{uuid.uuid4()}"
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        response = await gateway.request(method, path, headers={**user, **kwargs.pop("headers", {})}, **kwargs)
        texts.append(f"{response.status} {dict(response.headers)} {await response.text()}")
        return response

    with structlog.testing.capture_logs() as events:
        put = await (await call("POST", "/api/v1/keys", json={"provider": "anthropic", "secret": canary})).json()
        await call("POST", "/api/v1/keys", json={"provider": "openai", "secret": canary, "label": "canary"})
        # Refusals: by the document, by the handler, by the provider service; none may repeat the secret.
        for bad in (
            {"provider": "Not a provider", "secret": canary},
            {"provider": "anthropic", "secret": canary, "extra": canary},
            {"provider": "anthropic", "secret": f" {canary}"},
            {"provider": "anthropic", "secret": f"{canary}\x00"},
            {"provider": "anthropic", "secret": canary * 300},
            {"provider": "anthropic", "secret": [canary]},
        ):
            assert (await call("POST", "/api/v1/keys", json=bad)).status == 400
        await call("POST", "/api/v1/keys", data=f'{{"provider": "anthropic", "secret": "{canary}"', headers=_json())
        await call("POST", "/api/v1/keys", data=canary, headers={"Content-Type": "text/plain"})
        await call("GET", "/api/v1/keys")
        await call("GET", "/api/v1/usage/records")
        await call("GET", "/api/v1/usage/summary?group_by=day")
        await call("GET", "/api/v1/budget")
        await call("DELETE", f"/api/v1/keys/{put['id']}")
    assert put["last4"] == canary[-4:]
    assert any(event.get("event") == "http_request" for event in events)  # the capture saw the gateway
    assert len(texts) == 15
    for text in texts:
        assert canary not in text
    assert canary not in repr(events)
    assert canary not in caplog.text
    assert all(canary not in repr(record.__dict__) for record in caplog.records)


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def test_usage_records_and_sums_come_from_real_runs(stack: Stack, gateway: Client) -> None:
    user = await _user(stack)
    first = await _finished_run(gateway, user)
    second = await _finished_run(gateway, user)

    records = await answer(await gateway.get(f"/api/v1/usage/records?run_id={first['id']}", headers=user), 200)
    assert records["records"], "the demo model's attempt is metered"
    assert {(r["run_id"], r["provider"], r["outcome"]) for r in records["records"]} == {
        (first["id"], "demo", "completed")
    }
    everything = await answer(await gateway.get("/api/v1/usage/records?page_size=1", headers=user), 200)
    assert len(everything["records"]) == 1
    assert everything["next_page_token"]

    by_run = await answer(await gateway.get("/api/v1/usage/summary?group_by=run", headers=user), 200)
    assert by_run["group_by"] == ["run"]
    assert sorted(row["run_id"] for row in by_run["summaries"]) == sorted([first["id"], second["id"]])
    assert all(row["day"] is None and row["agent_id"] is None for row in by_run["summaries"])
    one = next(row for row in by_run["summaries"] if row["run_id"] == first["id"])
    assert one["attempt_count"] == len(records["records"])
    assert one["usage"]["output_tokens"] == sum(r["usage"]["output_tokens"] for r in records["records"])

    total = await answer(await gateway.get("/api/v1/usage/summary", headers=user), 200)
    assert [row["attempt_count"] for row in total["summaries"]] == [
        sum(r["attempt_count"] for r in by_run["summaries"])
    ]
    by_day = await answer(await gateway.get("/api/v1/usage/summary?group_by=day,run", headers=user), 200)
    assert {row["day"] for row in by_day["summaries"]} == {records["records"][0]["create_time"][:10]}
    by_model = await answer(await gateway.get("/api/v1/usage/summary?group_by=model", headers=user), 200)
    assert [(row["provider"], row["model"], row["attempt_count"], row["run_id"]) for row in by_model["summaries"]] == [
        ("demo", records["records"][0]["model"], total["summaries"][0]["attempt_count"], None)
    ]
    assert by_model["summaries"][0]["usage"]["cost_unknown"] is False  # the demo model is free, not unpriced
    later = "2999-01-01T00:00:00Z"
    none = await answer(await gateway.get(f"/api/v1/usage/records?start_time={later}", headers=user), 200)
    assert none["records"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("group_by=week", "group_by"),
        ("group_by=run,run", "group_by"),
        ("start_time=yesterday", "start_time"),
        ("start_time=2026-01-01T00:00:00", "start_time"),  # no offset
        ("end_time=0001-01-01T00:00:00%2B01:00", "end_time"),  # before the first representable instant
        ("page_size=-1", "page_size"),
        ("page_token=not-a-token", "page_token"),
    ],
)
async def test_bad_usage_queries_are_400(stack: Stack, gateway: Client, query: str, field: str) -> None:
    response = await gateway.get(f"/api/v1/usage/summary?{query}", headers=await _user(stack))
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert field in (await response.json())["detail"]


async def test_budgets_are_set_and_read_per_user_and_agent(stack: Stack, gateway: Client) -> None:
    user = await _user(stack)
    unset = await answer(await gateway.get("/api/v1/budget", headers=user), 200)
    assert (unset["scope"], unset["limit_micros"], unset["period"], unset["spent_micros"]) == ("user", 0, None, 0)

    body = {"limit_micros": 5_000_000, "period": "month"}
    set_ = await answer(await gateway.put("/api/v1/budget", json=body, headers=user), 200)
    assert (set_["limit_micros"], set_["period"], set_["scope_id"]) == (5_000_000, "month", None)
    assert set_["update_time"]
    assert set_["period_start_time"]
    assert await answer(await gateway.get("/api/v1/budget", headers=user), 200) == set_

    agent = await answer(
        await gateway.post("/api/v1/agents", json={"name": "budgeted", "model_route": "demo"}, headers=user), 201
    )
    path = f"/api/v1/agents/{agent['id']}/budget"
    agent_budget = await answer(await gateway.put(path, json={"limit_micros": 7, "period": "day"}, headers=user), 200)
    assert (agent_budget["scope"], agent_budget["scope_id"], agent_budget["limit_micros"]) == ("agent", agent["id"], 7)
    assert await answer(await gateway.get(path, headers=user), 200) == agent_budget
    unknown = f"/api/v1/agents/{uuid.uuid4()}/budget"
    assert await refusal(await gateway.get(unknown, headers=user), 404) == "AGENT_NOT_FOUND"

    removed = await answer(await gateway.put("/api/v1/budget", json={**body, "limit_micros": 0}, headers=user), 200)
    assert removed["limit_micros"] == 0


async def test_a_runs_budget_is_its_cost_limit(stack: Stack, gateway: Client) -> None:
    user = await _user(stack)
    run = await _finished_run(gateway, user, limits={"max_cost_micros": 1_000_000})
    budget = await answer(await gateway.get(f"/api/v1/runs/{run['id']}/budget", headers=user), 200)
    assert (budget["scope"], budget["scope_id"], budget["limit_micros"], budget["period"]) == (
        "run",
        run["id"],
        1_000_000,
        "lifetime",
    )
    assert await refusal(await gateway.get(f"/api/v1/runs/{uuid.uuid4()}/budget", headers=user), 404) == "RUN_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "limit_micros"),
        ({"limit_micros": 5}, "period"),
        ({"limit_micros": -1, "period": "day"}, "limit_micros"),
        ({"limit_micros": 10**16, "period": "day"}, "limit_micros"),
        ({"limit_micros": True, "period": "day"}, "limit_micros"),
        ({"limit_micros": 5, "period": "week"}, "period"),
        ({"limit_micros": 5, "period": "day", "scope": "user"}, "scope"),
    ],
)
async def test_bad_budgets_are_400_naming_the_field(
    stack: Stack, gateway: Client, body: dict[str, Any], field: str
) -> None:
    response = await gateway.put("/api/v1/budget", json=body, headers=await _user(stack))
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert (await response.json())["metadata"]["field"] == field
