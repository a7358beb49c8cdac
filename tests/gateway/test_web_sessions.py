"""The web app's sign-in cookie (ADR 0024): sign-in, sign-out, revocation, CSRF and event streams with it.

Requests pass the cookie by hand: the session client's cookie jar is emptied after each sign-in, so no other test
ever sends a cookie it did not ask for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from steward.errors import Reason
from tests.support.sse import parse_sse, read_sse
from tests.support.stack import Stack

Client = TestClient[Any, Any]
COOKIE = "steward_session"


def _origin(client: Client) -> str:
    return str(client.make_url("/")).rstrip("/")


def _cookie(secret: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={secret}"}


async def _sign_in(client: Client, token: str, **headers: str) -> tuple[str, Any, dict[str, Any]]:
    """Sign in; the cookie's secret, its Set-Cookie morsel and the answer."""
    response = await client.post("/api/v1/session", json={"token": token}, headers=headers)
    assert response.status == 200, await response.text()
    client.session.cookie_jar.clear()
    morsel = SimpleCookie(response.headers["Set-Cookie"])[COOKIE]
    return morsel.value, morsel, await response.json()


async def _token(gateway: Client, auth: dict[str, str], scopes: list[str] | None = None) -> dict[str, Any]:
    response = await gateway.post("/api/v1/tokens", json={"label": "web", "scopes": scopes or []}, headers=auth)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _reason(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    reason: str = (await response.json())["reason"]
    return reason


@pytest.fixture(scope="module")
async def proxied(stack: Stack) -> AsyncIterator[Client]:
    """A gateway behind a (pretend) TLS-terminating proxy: it trusts X-Forwarded-Proto and X-Forwarded-Host."""
    server = TestServer(create_app(stack.gateway_settings(trust_forwarded=True)), host="127.0.0.1", port=0)
    async with TestClient(server) as client:
        yield client


async def test_sign_in_get_and_sign_out(gateway: Client, auth: dict[str, str]) -> None:
    token = await _token(gateway, auth, ["conversations:read", "runs:read"])
    secret, morsel, signed_in = await _sign_in(gateway, token["token"])
    assert secret.startswith("sws_")
    assert token["token"] not in morsel.OutputString()
    assert (morsel["httponly"], morsel["samesite"], morsel["path"], morsel["secure"]) == (True, "Strict", "/", "")
    assert int(morsel["max-age"]) > 0
    assert signed_in["via"] == "api_token"
    assert signed_in["scopes"] == ["conversations:read", "runs:read"]
    got = await gateway.get("/api/v1/session", headers=_cookie(secret))
    assert got.status == 200
    assert await got.json() == signed_in
    assert (await gateway.get("/api/v1/conversations", headers=_cookie(secret))).status == 200
    # A session never widens its token: this one may not create conversations, with the right Origin or not.
    refused = await gateway.post(
        "/api/v1/conversations", json={}, headers={**_cookie(secret), "Origin": _origin(gateway)}
    )
    assert await _reason(refused, 403) == Reason.PERMISSION_DENIED
    # Sign-out needs the Origin too; then the session is over and the cookie cleared.
    assert await _reason(await gateway.delete("/api/v1/session", headers=_cookie(secret)), 403) == (
        Reason.ORIGIN_MISMATCH
    )
    out = await gateway.delete("/api/v1/session", headers={**_cookie(secret), "Origin": _origin(gateway)})
    assert out.status == 204
    cleared = SimpleCookie(out.headers["Set-Cookie"])[COOKIE]
    assert (cleared.value, cleared["max-age"]) == ("", "0")
    assert await _reason(await gateway.get("/api/v1/session", headers=_cookie(secret)), 401) == Reason.TOKEN_INVALID
    listed = await gateway.get("/api/v1/conversations", headers=_cookie(secret))
    assert await _reason(listed, 401) == Reason.TOKEN_INVALID
    assert (await gateway.delete("/api/v1/session")).status == 204  # signing out twice is fine


async def test_bad_tokens_and_no_cookie_are_refused(gateway: Client) -> None:
    for token in ("stw_nothing", "not-a-token", "eyJhbGciOiJIUzI1NiJ9.e30.x"):
        response = await gateway.post("/api/v1/session", json={"token": token})
        assert await _reason(response, 401) == Reason.TOKEN_INVALID
        assert "Set-Cookie" not in response.headers
    assert await _reason(await gateway.get("/api/v1/session"), 401) == Reason.TOKEN_MISSING
    forged = await gateway.get("/api/v1/session", headers=_cookie("sws_" + "A" * 43))
    assert await _reason(forged, 401) == Reason.TOKEN_INVALID
    # The cookie is no credential for the OpenAI API.
    assert await _reason(await gateway.get("/v1/models", headers=_cookie("sws_" + "A" * 43)), 401) == (
        Reason.TOKEN_MISSING
    )


async def test_cookie_is_secure_only_over_tls(stack: Stack, gateway: Client, proxied: Client) -> None:
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "steward.example.com"}
    _, untrusted, _ = await _sign_in(gateway, stack.dev_token, **https)  # this gateway trusts no proxy
    assert untrusted["secure"] == ""
    secret, behind_tls, signed_in = await _sign_in(proxied, stack.dev_token, **https)
    assert behind_tls["secure"] is True
    assert signed_in["via"] == "dev_token"
    # Behind the proxy the own origin is the proxy's.
    cookie = {**_cookie(secret), **https}
    created = await proxied.post("/api/v1/conversations", json={}, headers={**cookie, "Origin": _origin(proxied)})
    assert await _reason(created, 403) == Reason.ORIGIN_MISMATCH
    created = await proxied.post(
        "/api/v1/conversations", json={}, headers={**cookie, "Origin": "https://steward.example.com"}
    )
    assert created.status == 201, await created.text()
    # A sign-in from a foreign page is refused (login CSRF).
    foreign = await gateway.post(
        "/api/v1/session", json={"token": stack.dev_token}, headers={"Origin": "https://x.test"}
    )
    assert await _reason(foreign, 403) == Reason.ORIGIN_MISMATCH


async def test_state_changes_by_cookie_need_the_own_origin(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    secret, _, _ = await _sign_in(gateway, stack.dev_token)
    before = (await (await gateway.get("/api/v1/conversations?page_size=500", headers=auth)).json())["conversations"]
    for origin in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        refused = await gateway.post(
            "/api/v1/conversations", json={"title": "csrf"}, headers={**_cookie(secret), **origin}
        )
        assert await _reason(refused, 403) == Reason.ORIGIN_MISMATCH
    after = (await (await gateway.get("/api/v1/conversations?page_size=500", headers=auth)).json())["conversations"]
    assert after == before  # nothing changed
    made = await gateway.post(
        "/api/v1/conversations", json={"title": "csrf"}, headers={**_cookie(secret), "Origin": _origin(gateway)}
    )
    assert made.status == 201, await made.text()
    # A bearer token needs no Origin, and wins over a cookie sent with it.
    assert (await gateway.post("/api/v1/conversations", json={}, headers=auth)).status == 201
    assert (await gateway.post("/api/v1/conversations", json={}, headers={**auth, **_cookie("sws_x")})).status == 201


async def _completed_run(gateway: Client, auth: dict[str, str]) -> str:
    conversation = await (await gateway.post("/api/v1/conversations", json={}, headers=auth)).json()
    posted = await gateway.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "stream me"}, headers=auth
    )
    run_id: str = (await posted.json())["run"]["id"]
    await read_sse(gateway, f"/api/v1/runs/{run_id}/events", auth)  # wait for the end
    return run_id


async def test_streams_with_the_cookie_resume_by_query_and_end_with_the_token(
    gateway: Client, auth: dict[str, str]
) -> None:
    token = await _token(gateway, auth)
    secret, _, _ = await _sign_in(gateway, token["token"])
    run_id = await _completed_run(gateway, auth)
    path = f"/api/v1/runs/{run_id}/events"
    full = await read_sse(gateway, path, _cookie(secret))
    assert len(full) >= 4
    assert await read_sse(gateway, f"{path}?after_seq=2", _cookie(secret)) == full[2:]
    # The header wins over the query cursor.
    assert await read_sse(gateway, f"{path}?after_seq=1", {**_cookie(secret), "Last-Event-ID": "3"}) == full[3:]
    both = await gateway.get(f"{path}?after_seq=1&last_event_id=1", headers=_cookie(secret))
    assert await _reason(both, 400) == Reason.INVALID_ARGUMENT
    # Revoking the token ends its session: the next stream is a plain 401, no event and no `retry:`.
    assert (await gateway.delete(f"/api/v1/tokens/{token['id']}", headers=auth)).status == 200
    refused = await gateway.get(f"{path}?after_seq=2", headers=_cookie(secret))
    assert refused.status == 401
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    body = await refused.text()
    assert json.loads(body)["reason"] == Reason.TOKEN_INVALID
    assert parse_sse(body) == []
    assert "retry:" not in body
    assert await _reason(await gateway.get("/api/v1/session", headers=_cookie(secret)), 401) == Reason.TOKEN_INVALID
