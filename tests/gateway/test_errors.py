"""Bad input gets a clean problem+json with a stable reason, never a stack trace."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"


async def _problem(response: Any, status: int, reason: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    assert body["reason"] == reason
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


async def _conversation(gateway: Client, auth: dict[str, str]) -> str:
    response = await gateway.post("/api/v1/conversations", json={}, headers=auth)
    assert response.status == 201
    conversation_id: str = (await response.json())["id"]
    return conversation_id


@pytest.mark.parametrize("body", ["{bad", "[1, 2]", '"text"', "\xff", '{"title": "\\ud800"}'])
async def test_malformed_json_is_400(gateway: Client, auth: dict[str, str], body: str) -> None:
    response = await gateway.post(
        "/api/v1/conversations", data=body.encode("latin-1"), headers={**auth, "Content-Type": "application/json"}
    )
    await _problem(response, 400, "MALFORMED_JSON")


async def test_malformed_json_on_messages_is_400(gateway: Client, auth: dict[str, str]) -> None:
    conversation_id = await _conversation(gateway, auth)
    response = await gateway.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        data=b'{"content": ',
        headers={**auth, "Content-Type": "application/json"},
    )
    await _problem(response, 400, "MALFORMED_JSON")


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": []},
        {"content": [{"type": "image"}]},
        {"content": 5},
        {"content": "hi", "run_id": "not-a-uuid"},
    ],
)
async def test_invalid_message_is_400(gateway: Client, auth: dict[str, str], payload: dict[str, Any]) -> None:
    conversation_id = await _conversation(gateway, auth)
    response = await gateway.post(f"/api/v1/conversations/{conversation_id}/messages", json=payload, headers=auth)
    await _problem(response, 400, "INVALID_ARGUMENT")


async def test_wrong_content_type_is_415(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.post(
        "/api/v1/conversations", data=b"title=x", headers={**auth, "Content-Type": "text/plain"}
    )
    await _problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_oversized_body_is_413(gateway: Client, auth: dict[str, str]) -> None:
    big = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await gateway.post(
        "/api/v1/conversations", data=io.BytesIO(big), headers={**auth, "Content-Type": "application/json"}
    )
    await _problem(response, 413, "TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        ("GET", "/api/v1/conversations/00000000-0000-0000-0000-000000000000", "CONVERSATION_NOT_FOUND"),
        ("GET", "/api/v1/conversations/unknown/messages", "CONVERSATION_NOT_FOUND"),
        ("DELETE", "/api/v1/conversations/unknown", "CONVERSATION_NOT_FOUND"),
        ("GET", "/api/v1/runs/unknown", "RUN_NOT_FOUND"),
        ("GET", "/api/v1/runs/unknown/events", "RUN_NOT_FOUND"),
        ("GET", "/api/v1/nothing-here", "ROUTE_NOT_FOUND"),
    ],
)
async def test_unknown_resources_are_404(
    gateway: Client, auth: dict[str, str], method: str, path: str, reason: str
) -> None:
    response = await gateway.request(method, path, headers=auth)
    await _problem(response, 404, reason)


async def test_unknown_conversation_for_a_message_is_404(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.post("/api/v1/conversations/unknown/messages", json={"content": "hi"}, headers=auth)
    await _problem(response, 404, "CONVERSATION_NOT_FOUND")


async def test_wrong_method_is_405(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.put("/api/v1/conversations", json={}, headers=auth)
    await _problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


async def test_missing_token_is_401(gateway: Client) -> None:
    response = await gateway.get("/api/v1/conversations")
    await _problem(response, 401, "TOKEN_MISSING")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    "])
async def test_invalid_token_is_401(gateway: Client, header: str) -> None:
    response = await gateway.get("/api/v1/conversations", headers={"Authorization": header})
    await _problem(response, 401, "TOKEN_INVALID")


async def test_token_in_query_string_is_refused(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.get("/api/v1/conversations?access_token=abc", headers=auth)
    await _problem(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("cursor", ["-1", "abc", "1.5", "9" * 40])
async def test_bad_event_cursor_is_400(gateway: Client, auth: dict[str, str], cursor: str) -> None:
    response = await gateway.get("/api/v1/runs/whatever/events", headers={**auth, "Last-Event-ID": cursor})
    await _problem(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("query", ["page_size=-1", "page_size=abc", "page_token=xyz"])
async def test_bad_pagination_is_400(gateway: Client, auth: dict[str, str], query: str) -> None:
    response = await gateway.get(f"/api/v1/conversations?{query}", headers=auth)
    await _problem(response, 400, "INVALID_ARGUMENT")


async def test_health_endpoints_need_no_token(gateway: Client) -> None:
    assert (await gateway.get("/healthz")).status == 200
    ready = await gateway.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["services"] == {
        "confirm": "serving",
        "provider": "serving",
        "runtime": "serving",
        "store": "serving",
        "mcp": "serving",
    }
