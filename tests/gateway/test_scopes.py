"""Token scopes at the gateway: one table of the scope each route requires (generated checks: a route without an
entry fails), enforced on scoped API tokens made through the real gateway and verified by the real store.

OIDC JWTs map onto the same table (tests/gateway/test_oidc.py).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import openapi
from gateway.app import create_app
from gateway.app_keys import ACCESS
from gateway.auth import scopes
from gateway.auth.scopes import PUBLIC, ROUTE_SCOPES, SCOPES
from gateway.mcp import metadata as mcp_metadata
from steward.errors import Reason
from tests.support.gateway_http import answer, refusal
from tests.support.stack import Stack, store_user_token

Client = TestClient[Any, Any]
PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _routes(stack: Stack) -> set[tuple[str, str]]:
    found = set()
    for route in create_app(stack.gateway_settings()).router.routes():
        key = scopes.route_key(route)
        if key is not None:
            found.add(key)
    return found


def _path(template: str) -> str:
    """A concrete path for a route template: every id an unknown one."""
    return PLACEHOLDER.sub(lambda _m: str(uuid.uuid4()), template)


async def _token(gateway: Client, headers: dict[str, str], wanted: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"label": "scoped"}
    if wanted is not None:
        body["scopes"] = wanted
    created: dict[str, Any] = await answer(await gateway.post("/api/v1/tokens", json=body, headers=headers), 201)
    return created


def test_every_route_has_a_scope(stack: Stack) -> None:
    routes = _routes(stack)
    assert len(routes) > 20  # the walk still finds the routes
    missing = routes - ROUTE_SCOPES.keys()
    assert missing == set(), f"add the scope each of these routes requires to gateway/auth/scopes.py: {sorted(missing)}"
    assert ROUTE_SCOPES.keys() - routes == set()  # no entry for a route that is gone
    assert {scope for scope in ROUTE_SCOPES.values() if scope is not PUBLIC} == SCOPES.keys()  # every scope guards
    assert all(re.fullmatch(r"[a-z][a-z0-9_.:-]{0,63}", scope) for scope in SCOPES)  # what the store accepts


def test_paths_served_without_a_token_need_no_scope(stack: Stack) -> None:
    access = create_app(stack.gateway_settings())[ACCESS]  # as the installers registered them
    public = {path for (_method, path), scope in ROUTE_SCOPES.items() if scope is PUBLIC}
    assert {path for path in access.public_paths if ("GET", path) in ROUTE_SCOPES} <= public
    assert access.public_routes <= public  # the web app's templates
    assert all("{" not in path for path in public - access.public_routes)
    assert ROUTE_SCOPES[("POST", "/mcp")] == mcp_metadata.MCP_SCOPE  # what /mcp's metadata advertises


def test_the_document_lists_the_scopes_a_token_may_be_given() -> None:
    body = openapi.document()["paths"]["/api/v1/tokens"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["scopes"]["items"]["enum"] == list(SCOPES)


@pytest.mark.parametrize(("method", "path"), sorted(k for k, v in ROUTE_SCOPES.items() if v is PUBLIC))
async def test_public_routes_need_no_token(gateway: Client, method: str, path: str) -> None:
    response = await gateway.request(method, _path(path))
    if (method, path) == ("GET", "/api/v1/session"):  # needs no token, but reads the session cookie itself
        assert await refusal(response, 401) == Reason.TOKEN_MISSING
        return
    assert response.status not in {401, 403}, await response.text()


@pytest.mark.parametrize(("method", "template"), sorted(k for k, v in ROUTE_SCOPES.items() if v is not PUBLIC))
async def test_every_other_route_needs_a_token(gateway: Client, method: str, template: str) -> None:
    verb, path, body = _request(method, template)
    response = await gateway.request(verb, path, json=body)
    assert await refusal(response, 401) == "TOKEN_MISSING"


def _request(method: str, template: str) -> tuple[str, str, dict[str, Any] | None]:
    method = "POST" if method == "*" else method
    body: dict[str, Any] | None = {} if method in {"POST", "PUT", "PATCH"} else None
    return method, _path(template), body


def _insufficient(response: Any) -> bool:
    return response.status == 403 and "insufficient_scope" in response.headers.get("WWW-Authenticate", "")


@pytest.fixture(scope="module")
async def tokens_by_scope(gateway: Client, stack: Stack) -> dict[str, tuple[str, str]]:
    """For each scope: a token holding only it, and a token holding every scope but it."""
    dev = _bearer(stack.dev_token)
    made = {}
    for scope in SCOPES:
        only = await _token(gateway, dev, [scope])
        others = await _token(gateway, dev, [s for s in SCOPES if s != scope])
        assert only["scopes"] == [scope]
        made[scope] = (only["token"], others["token"])
    return made


@pytest.mark.parametrize(("method", "template"), sorted(k for k, v in ROUTE_SCOPES.items() if v is not PUBLIC))
async def test_a_route_needs_its_scope_and_no_other(
    gateway: Client, tokens_by_scope: dict[str, tuple[str, str]], method: str, template: str
) -> None:
    scope = ROUTE_SCOPES[(method, template)]
    assert scope is not None
    only, others = tokens_by_scope[scope]
    verb, path, body = _request(method, template)
    refused = await gateway.request(verb, path, json=body, headers=_bearer(others))
    assert await refusal(refused, 403) == "PERMISSION_DENIED"
    # (/mcp adds `resource_metadata` after it: RFC 9728, gateway/mcp/metadata.py)
    assert refused.headers["WWW-Authenticate"].startswith(
        f'Bearer realm="steward", error="insufficient_scope", scope="{scope}"'
    )
    allowed = await gateway.request(verb, path, json=body, headers=_bearer(only))
    # Past the scope check: 404 (the made-up ids), 400 (the empty bodies), ... are fine; a failure is not.
    assert allowed.status < 500, await allowed.text()
    assert allowed.status != 401, await allowed.text()
    assert not _insufficient(allowed), await allowed.text()


async def test_head_needs_the_scope_of_get(gateway: Client, auth: dict[str, str]) -> None:
    runs_only = _bearer((await _token(gateway, auth, ["runs:read"]))["token"])
    refused = await gateway.head("/api/v1/conversations", headers=runs_only)
    assert refused.status == 403
    assert refused.headers["WWW-Authenticate"].endswith('error="insufficient_scope", scope="conversations:read"')
    reader = _bearer((await _token(gateway, auth, ["conversations:read"]))["token"])
    assert (await gateway.head("/api/v1/conversations", headers=reader)).status == 200
    assert (await gateway.head("/api/v1/runs", headers=runs_only)).status == 200


async def test_a_scoped_token_does_what_its_scopes_allow_end_to_end(gateway: Client, auth: dict[str, str]) -> None:
    reader = _bearer((await _token(gateway, auth, ["conversations:read", "runs:read"]))["token"])
    writer = _bearer((await _token(gateway, auth, ["conversations:write", "runs:write"]))["token"])
    conversation = await answer(await gateway.post("/api/v1/conversations", json={"title": "s"}, headers=writer), 201)
    path = f"/api/v1/conversations/{conversation['id']}"
    started = await answer(await gateway.post(f"{path}/messages", json={"content": "hi"}, headers=writer), 202)
    assert (await answer(await gateway.get(path, headers=reader), 200))["id"] == conversation["id"]
    run = await answer(await gateway.get(f"/api/v1/runs/{started['run']['id']}", headers=reader), 200)
    assert run["conversation_id"] == conversation["id"]
    for _ in range(2):  # the second answer comes from the gateway's token cache: it keeps the scopes
        refused = await gateway.post("/api/v1/conversations", json={"title": "no"}, headers=reader)
        assert await refusal(refused, 403) == "PERMISSION_DENIED"
    assert await refusal(await gateway.get(path, headers=writer), 403) == "PERMISSION_DENIED"
    assert await refusal(await gateway.delete(path, headers=reader), 403) == "PERMISSION_DENIED"
    assert (await gateway.get(path, headers=auth)).status == 200  # the refused delete deleted nothing


async def test_the_openai_api_is_scoped_too(gateway: Client, auth: dict[str, str]) -> None:
    models = _bearer((await _token(gateway, auth, ["agents:read"]))["token"])
    listed = await answer(await gateway.get("/v1/models", headers=models), 200)
    assert "steward" in [model["id"] for model in listed["data"]]
    chat = {"model": "steward", "messages": [{"role": "user", "content": "hello"}]}
    refused = await gateway.post("/v1/chat/completions", json=chat, headers=models)
    assert await refusal(refused, 403) == "PERMISSION_DENIED"
    runner = _bearer((await _token(gateway, auth, ["runs:write"]))["token"])
    completion = await answer(await gateway.post("/v1/chat/completions", json=chat, headers=runner), 200)
    assert completion["choices"][0]["message"]["content"]
    assert await refusal(await gateway.get("/v1/models", headers=runner), 403) == "PERMISSION_DENIED"


async def test_created_scopes_are_sorted_and_unique(gateway: Client, auth: dict[str, str]) -> None:
    created = await _token(gateway, auth, ["runs:write", "agents:read", "runs:write"])
    assert created["scopes"] == ["agents:read", "runs:write"]
    listed = await answer(await gateway.get("/api/v1/tokens?page_size=500", headers=auth), 200)
    assert {t["id"]: t["scopes"] for t in listed["tokens"]}[created["id"]] == ["agents:read", "runs:write"]
    assert (await _token(gateway, auth, []))["scopes"] == []  # an empty list: all rights, like none given


@pytest.mark.parametrize("wanted", [["runs:admin"], ["runs:read", "RUNS:READ"], [""], ["openid"]])
async def test_unknown_scopes_are_refused_at_creation(gateway: Client, auth: dict[str, str], wanted: object) -> None:
    response = await gateway.post("/api/v1/tokens", json={"scopes": wanted}, headers=auth)
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert "runs:read" in (await response.json())["detail"]  # the detail names the scopes there are


async def test_a_token_made_with_a_scoped_token_holds_no_more_than_it(gateway: Client, auth: dict[str, str]) -> None:
    parent = _bearer((await _token(gateway, auth, ["tokens:write", "runs:read", "agents:read"]))["token"])
    narrower = await _token(gateway, parent, ["runs:read"])
    assert narrower["scopes"] == ["runs:read"]
    inherited = await _token(gateway, parent, None)  # asks for nothing: gets the parent's scopes, not all rights
    assert inherited["scopes"] == ["agents:read", "runs:read", "tokens:write"]
    wider = await gateway.post("/api/v1/tokens", json={"scopes": ["runs:read", "runs:write"]}, headers=parent)
    assert await refusal(wider, 403) == "PERMISSION_DENIED"
    assert wider.headers["WWW-Authenticate"] == 'Bearer realm="steward", error="insufficient_scope", scope="runs:write"'
    unscoped = _bearer((await _token(gateway, auth, None))["token"])
    assert (await _token(gateway, unscoped, ["agents:write"]))["scopes"] == ["agents:write"]  # all rights: any scope
    no_tokens = _bearer((await _token(gateway, auth, ["runs:read"]))["token"])
    refused = await gateway.post("/api/v1/tokens", json={"scopes": ["runs:read"]}, headers=no_tokens)
    assert await refusal(refused, 403) == "PERMISSION_DENIED"


async def test_a_token_with_scopes_steward_does_not_know_may_do_nothing(stack: Stack, gateway: Client) -> None:
    # Made in the store directly (the gateway refuses unknown scopes): say, a scope of an older or newer version.
    odd = _bearer(await store_user_token(stack, scopes=("conversations:admin",)))
    for method, path in [("GET", "/api/v1/conversations"), ("GET", "/api/v1/tokens"), ("GET", "/v1/models")]:
        assert await refusal(await gateway.request(method, path, headers=odd), 403) == "PERMISSION_DENIED"
    assert (await gateway.get("/healthz", headers=odd)).status == 200
