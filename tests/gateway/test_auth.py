"""API tokens at the gateway: made with the dev token, verified by the real store, revoked, refused.

Two gateways serve the same in-process stack: the session's (`gateway`, caching verified tokens for the
default 30 s) and `replica` (cache off), to show a revoke made through another replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import server as gateway_server
from gateway.app import create_app
from gateway.auth.bearer import TokenCache
from steward.store.v1 import identity_pb2
from tests.support.gateway_http import raw_request, refusal
from tests.support.stack import Stack, store_user_token

Client = TestClient[Any, Any]
INVALID_CHALLENGE = 'Bearer realm="steward", error="invalid_token"'


@pytest.fixture(scope="module")
async def replica(stack: Stack) -> AsyncIterator[Client]:
    """A second gateway on the same stack that does not cache verified tokens."""
    server = TestServer(create_app(stack.gateway_settings(token_cache_seconds=0)), host="127.0.0.1", port=0)
    async with TestClient(server) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _create_token(gateway: Client, auth: dict[str, str], **body: object) -> dict[str, Any]:
    response = await gateway.post("/api/v1/tokens", json={"label": "tests", **body}, headers=auth)
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    created: dict[str, Any] = await response.json()
    return created


async def _conversation(gateway: Client, auth: dict[str, str]) -> str:
    response = await gateway.post("/api/v1/conversations", json={"title": "mine"}, headers=auth)
    assert response.status == 201, await response.text()
    conversation_id: str = (await response.json())["id"]
    return conversation_id


async def test_a_token_made_with_the_dev_token_acts_as_the_dev_user(
    stack: Stack, gateway: Client, auth: dict[str, str]
) -> None:
    created = await _create_token(gateway, auth, label="laptop")
    assert created["token"].startswith("stw_")
    assert (created["label"], created["state"], created["expire_time"], created["revoke_time"]) == (
        "laptop",
        "active",
        None,
        None,
    )
    token = _bearer(created["token"])
    by_dev_token = await _conversation(gateway, auth)
    shown = await gateway.get(f"/api/v1/conversations/{by_dev_token}", headers=token)
    assert shown.status == 200
    by_api_token = await _conversation(gateway, token)
    assert (await gateway.get(f"/api/v1/conversations/{by_api_token}", headers=auth)).status == 200


async def test_another_users_token_sees_nothing_of_ours(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    ours = _bearer((await _create_token(gateway, auth))["token"])
    theirs = _bearer(await store_user_token(stack))
    mine = await _conversation(gateway, ours)
    assert await refusal(await gateway.get(f"/api/v1/conversations/{mine}", headers=theirs), 404) == (
        "CONVERSATION_NOT_FOUND"
    )
    listed = await (await gateway.get("/api/v1/conversations?page_size=500", headers=theirs)).json()
    assert mine not in [c["id"] for c in listed["conversations"]]
    their_conversation = await _conversation(gateway, theirs)
    assert (await gateway.get(f"/api/v1/conversations/{their_conversation}", headers=theirs)).status == 200
    assert (await gateway.get(f"/api/v1/conversations/{their_conversation}", headers=ours)).status == 404


async def test_tokens_are_listed_without_their_text(gateway: Client, auth: dict[str, str]) -> None:
    created = await _create_token(gateway, auth, label="listed")
    response = await gateway.get("/api/v1/tokens?page_size=500", headers=auth)
    assert response.status == 200
    text = await response.text()
    assert created["token"] not in text
    secret_part = created["token"].removeprefix(f"stw_{created['prefix']}_")  # the secret itself may hold "_"
    assert len(secret_part) >= 32
    assert secret_part not in text
    listed = {t["id"]: t for t in (await response.json())["tokens"]}
    assert "token" not in listed[created["id"]]
    assert {k: listed[created["id"]][k] for k in ("label", "prefix", "state")} == {
        "label": "listed",
        "prefix": created["prefix"],
        "state": "active",
    }
    # The token lists the same tokens as the dev token: both are the dev user.
    by_token = await (await gateway.get("/api/v1/tokens?page_size=500", headers=_bearer(created["token"]))).json()
    assert created["id"] in [t["id"] for t in by_token["tokens"]]


async def test_a_revoked_token_is_refused_at_once_by_the_gateway_that_revoked_it(
    gateway: Client, auth: dict[str, str]
) -> None:
    created = await _create_token(gateway, auth)
    token = _bearer(created["token"])
    assert (await gateway.get("/api/v1/conversations", headers=token)).status == 200  # now cached
    revoked = await gateway.delete(f"/api/v1/tokens/{created['id']}", headers=auth)
    assert revoked.status == 200
    assert (await revoked.json())["state"] == "revoked"
    refused = await gateway.get("/api/v1/conversations", headers=token)
    assert await refusal(refused, 401) == "TOKEN_INVALID"
    assert refused.headers["WWW-Authenticate"] == INVALID_CHALLENGE
    again = await gateway.delete(f"/api/v1/tokens/{created['id']}", headers=auth)  # idempotent
    assert again.status == 200


async def test_a_revoke_elsewhere_is_seen_by_a_replica_without_a_cache(
    gateway: Client, replica: Client, auth: dict[str, str]
) -> None:
    created = await _create_token(gateway, auth)
    token = _bearer(created["token"])
    assert (await replica.get("/api/v1/conversations", headers=token)).status == 200
    assert (await gateway.delete(f"/api/v1/tokens/{created['id']}", headers=auth)).status == 200
    assert await refusal(await replica.get("/api/v1/conversations", headers=token), 401) == "TOKEN_INVALID"


async def test_another_users_token_cannot_be_revoked(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    created = await _create_token(gateway, auth)
    theirs = _bearer(await store_user_token(stack))
    response = await gateway.delete(f"/api/v1/tokens/{created['id']}", headers=theirs)
    assert await refusal(response, 404) == "TOKEN_NOT_FOUND"
    listed = await (await gateway.get("/api/v1/tokens", headers=theirs)).json()
    assert created["id"] not in [t["id"] for t in listed["tokens"]]
    assert (await gateway.get("/api/v1/conversations", headers=_bearer(created["token"]))).status == 200
    unknown = await gateway.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=auth)
    assert await refusal(unknown, 404) == "TOKEN_NOT_FOUND"


async def test_an_expired_token_is_refused_even_while_cached(gateway: Client, auth: dict[str, str]) -> None:
    created = await _create_token(gateway, auth, ttl_seconds=1)
    assert created["expire_time"] is not None
    token = _bearer(created["token"])
    first = await gateway.get("/api/v1/conversations", headers=token)
    if first.status == 200:  # still inside its second: it is cached until its expiry, not for 30 s
        deadline = time.monotonic() + 5
        while (await gateway.get("/api/v1/conversations", headers=token)).status == 200:
            assert time.monotonic() < deadline, "an expired token was still accepted"
            await asyncio.sleep(0.1)
    refused = await gateway.get("/api/v1/conversations", headers=token)
    assert await refusal(refused, 401) == "TOKEN_INVALID"
    listed = await (await gateway.get("/api/v1/tokens?page_size=500", headers=auth)).json()
    assert {t["id"]: t["state"] for t in listed["tokens"]}[created["id"]] == "expired"


async def test_an_expire_time_sets_the_expiry(gateway: Client, auth: dict[str, str]) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    created = await _create_token(gateway, auth, expire_time=when.isoformat())
    expires = datetime.fromisoformat(created["expire_time"])
    assert abs((expires - when).total_seconds()) < 5


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "stw_",
        "stw_" + "A" * 12 + "_" + "b" * 43,  # well formed, unknown
        "stw_" + "A" * 300,
        "stw_ünïcode",
    ],
)
async def test_unknown_tokens_are_refused(gateway: Client, token: str) -> None:
    response = await gateway.get("/api/v1/conversations", headers=_bearer(token))
    assert await refusal(response, 401) == "TOKEN_INVALID"
    assert response.headers["WWW-Authenticate"] == INVALID_CHALLENGE


async def test_a_missing_token_is_refused_with_a_challenge(gateway: Client) -> None:
    response = await gateway.get("/api/v1/tokens")
    assert await refusal(response, 401) == "TOKEN_MISSING"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="steward"'


@pytest.mark.parametrize("name", ["access_token", "token", "api_key"])
async def test_a_token_in_the_query_string_is_refused(gateway: Client, auth: dict[str, str], name: str) -> None:
    created = await _create_token(gateway, auth)
    response = await gateway.get(f"/api/v1/conversations?{name}={created['token']}")
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    with_header = await gateway.get(f"/api/v1/conversations?{name}={created['token']}", headers=auth)
    assert await refusal(with_header, 400) == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"label": 5}, "INVALID_ARGUMENT"),
        ({"label": "x" * 201}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": "60"}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": True}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": 0}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": 1.5}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": 400 * 86400}, "INVALID_ARGUMENT"),
        ({"ttl_seconds": 60, "expire_time": "2099-01-01T00:00:00Z"}, "INVALID_ARGUMENT"),
        ({"expire_time": "tomorrow"}, "INVALID_ARGUMENT"),
        ({"expire_time": "2020-01-01T00:00:00Z"}, "INVALID_ARGUMENT"),
        ({"expire_time": "2099-01-01T00:00:00"}, "INVALID_ARGUMENT"),
        ({"expire_time": 12}, "INVALID_ARGUMENT"),
        ({"scopes": ["runs:admin"]}, "INVALID_ARGUMENT"),  # not a scope (tests/gateway/test_scopes.py)
        ({"scopes": "runs:write"}, "INVALID_ARGUMENT"),
        ({"scopes": [5]}, "INVALID_ARGUMENT"),
        ({"ttl": 3600}, "INVALID_ARGUMENT"),  # a misspelt expiry must not make a token that never expires
    ],
)
async def test_bad_create_bodies_are_400(gateway: Client, auth: dict[str, str], body: object, reason: str) -> None:
    response = await gateway.post("/api/v1/tokens", json=body, headers=auth)
    assert await refusal(response, 400) == reason


@pytest.mark.parametrize("raw", [b"{bad", b"[1]", b'"label"', b"[" * 100_000])
async def test_malformed_create_bodies_are_400(gateway: Client, auth: dict[str, str], raw: bytes) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = await gateway.post("/api/v1/tokens", data=raw, headers=headers)
    assert await refusal(response, 400) == "MALFORMED_JSON"


async def test_no_token_text_reaches_the_logs(
    stack: Stack, auth: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway is served by gateway.server.main itself, so its runner options are the production ones: aiohttp's
    # own access log, which would write the request line (query string, token included) at INFO, is off there. The
    # session's `gateway` (aiohttp's TestServer) keeps it on, and whether it logged here depended on whether this
    # test opened a new connection (a connection reads the log level once, when it opens).
    # Only the settings, the logging setup (it would take pytest's handler off the root logger and reconfigure
    # structlog for the rest of the session) and the wait for a signal are replaced.
    runners: list[web.AppRunner] = []

    class RecordingRunner(web.AppRunner):
        def __init__(self, app: web.Application, **kwargs: Any) -> None:
            super().__init__(app, **kwargs)
            runners.append(self)

    seen: dict[str, str] = {}

    async def requests_instead_of_a_signal() -> None:
        (address,) = runners[0].addresses
        async with aiohttp.ClientSession(f"http://{address[0]}:{address[1]}") as client:
            created_response = await client.post("/api/v1/tokens", json={"label": "tests"}, headers=auth)
            assert created_response.status == 201, await created_response.text()
            created = await created_response.json()
            token = seen["token"] = created["token"]
            seen["secret"] = token.removeprefix(f"stw_{created['prefix']}_")  # the secret itself may hold "_"
            seen["altered"] = token[:-1] + ("A" if token[-1] != "A" else "B")
            requests = [
                client.get("/api/v1/conversations", headers=_bearer(token)),
                client.get(f"/api/v1/conversations?access_token={token}"),  # refused: 400
                client.delete(f"/api/v1/tokens/{created['id']}", headers=_bearer(token)),
                client.get("/api/v1/conversations", headers=_bearer(token)),  # refused: revoked
                client.get("/api/v1/conversations", headers=_bearer(seen["altered"])),  # refused: unknown
            ]
            statuses = []
            for request in requests:
                async with request as response:
                    await response.read()
                    statuses.append(response.status)
            assert statuses == [200, 400, 200, 401, 401]

    monkeypatch.setattr(gateway_server, "GatewaySettings", lambda: stack.gateway_settings(gateway_port=0))
    monkeypatch.setattr(gateway_server, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(gateway_server, "wait_for_shutdown_signal", requests_instead_of_a_signal)
    monkeypatch.setattr(web, "AppRunner", RecordingRunner)  # gateway.server calls web.AppRunner(...)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        await gateway_server.main()
    assert len(runners) == 1
    assert any(event.get("event") == "http_request" for event in events)  # the capture saw the gateway
    assert any(event.get("event") == "api_token_refused" for event in events)
    assert any(record.levelno == logging.DEBUG for record in caplog.records)  # stdlib logging was captured too
    assert len(seen["secret"]) >= 32
    for secret in (seen["token"], seen["secret"], seen["altered"], stack.dev_token):
        assert secret not in repr(events)
        assert secret not in caplog.text
        assert all(secret not in repr(record.__dict__) for record in caplog.records)


def test_the_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache = TokenCache(30, 2, clock=lambda: now[0])
    forever = identity_pb2.ApiToken(id="t1")
    for name in ("a", "b", "c"):
        cache.put(name, "u", forever, generation=0)
    assert (cache.get("a"), len(cache)) == (None, 2)  # the least recently used went out
    assert cache.get("b") is not None
    now[0] = 30.0
    assert cache.get("b") is None
    soon = identity_pb2.ApiToken(id="t2")
    soon.expire_time.FromSeconds(int(time.time()) + 2)
    now[0] = 100.0
    cache.put("d", "u", soon, generation=0)
    now[0] = 103.0
    assert cache.get("d") is None  # gone at the token's expiry, before the cache's 30 s
    cache.put("e", "u", forever, generation=0)
    cache.forget_token("t1")
    assert cache.get("e") is None
    off = TokenCache(0, 10)
    off.put("x", "u", forever, generation=0)
    assert len(off) == 0


def test_a_verification_that_raced_a_revoke_is_not_cached() -> None:
    cache = TokenCache(30, 10)
    token = identity_pb2.ApiToken(id="t1")
    begun = cache.generation  # the store is asked now...
    cache.forget_token("t1")  # ...a revoke lands on this gateway before the answer...
    cache.put("k", "u", token, generation=begun)  # ...which may predate the revoke: not cached
    assert cache.get("k") is None
    cache.put("k", "u", token, generation=cache.generation)  # a verification begun after it is
    assert cache.get("k") is not None


async def test_a_token_made_with_a_token_expires_no_later_than_it(gateway: Client, auth: dict[str, str]) -> None:
    parent = await _create_token(gateway, auth, ttl_seconds=120)
    child = await _create_token(gateway, _bearer(parent["token"]))  # asks for no expiry at all
    assert child["expire_time"] is not None
    assert datetime.fromisoformat(child["expire_time"]) <= datetime.fromisoformat(parent["expire_time"])
    longer = await _create_token(gateway, _bearer(parent["token"]), ttl_seconds=3600)
    assert datetime.fromisoformat(longer["expire_time"]) <= datetime.fromisoformat(parent["expire_time"])


async def test_a_token_that_is_not_ascii_is_refused(gateway: Client) -> None:
    # Raw bytes on the wire: aiohttp decodes them with surrogateescape, which no comparison may choke on.
    request = b"GET /api/v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer stw_\xff\xfe\r\n\r\n"
    answer = await raw_request(gateway, request)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'"reason": "TOKEN_INVALID"' in answer
