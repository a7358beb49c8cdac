"""The OpenAPI document: served publicly, valid OpenAPI 3.1, exactly the gateway's routes, answers that match
it, and requests checked against it (400 INVALID_ARGUMENT naming the field) before their handlers run.

Schema fuzzing of the whole document runs outside pytest (`make fuzz-api`, tests/gateway/fuzz_api.py).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway import openapi, openapi_validation
from gateway.app import create_app
from steward import paging
from tests.support.gateway_http import refusal
from tests.support.sse import SseEvent, parse_sse, read_sse
from tests.support.stack import Stack, runtime_confirmation

Client = TestClient[Any, Any]
DOC = "urn:test:openapi"


def _undocumented_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        if not openapi.undocumented(route.resource.canonical):
            found.add((route.method, route.resource.canonical))
    return found - openapi.operations()


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()  # raises on the first violation
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_documented_and_every_operation_is_a_route(stack: Stack) -> None:
    app = create_app(stack.gateway_settings())
    routes = _routes(app)
    assert len(routes) > 30  # the walk still finds the routes
    assert _undocumented_routes(app) == set(), "document these routes in gateway/openapi.yaml"
    documented = openapi.operations()
    assert documented - routes == set(), "the document names routes the gateway does not have"


def test_a_new_route_without_a_document_entry_is_found(stack: Stack) -> None:
    app = create_app(stack.gateway_settings())

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/v1/widgets/{widget_id}", handler)
    assert _undocumented_routes(app) == {("GET", "/api/v1/widgets/{widget_id}")}


async def test_the_document_is_served_without_a_token(gateway: Client) -> None:
    response = await gateway.get(openapi.DOCUMENT_PATH)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Request-ID"]
    assert await response.json() == openapi.document()
    assert (await gateway.head(openapi.DOCUMENT_PATH)).status == 200
    # Only the document: its neighbours still need a token.
    assert await refusal(await gateway.get("/api/v1/openapi.yaml"), 401) == "TOKEN_MISSING"


def _response_validator(method: str, path: str, status: int, media: str) -> Draft202012Validator:
    """A validator for the documented answer of an operation (following a `$ref` to a shared response)."""
    document = openapi.document()
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    pointer = ["paths", path, method.lower(), "responses", str(status)]
    if "$ref" in response:
        pointer = response["$ref"].removeprefix("#/").split("/")
        response = document["components"]["responses"][pointer[-1]]
    assert media in response["content"], (method, path, status, media)
    return _validator([*pointer, "content", media, "schema"])


def _validator(pointer: list[str]) -> Draft202012Validator:
    """A validator for the schema at `pointer` in the document, resolving its `$ref`s."""
    escaped = "/".join(token.replace("~", "~0").replace("/", "~1") for token in pointer)
    registry: Registry[Any] = Registry().with_resource(DOC, DRAFT202012.create_resource(openapi.document()))
    return Draft202012Validator({"$ref": f"{DOC}#/{escaped}"}, registry=registry)


def _event(event: SseEvent) -> dict[str, str]:
    return {"event": event.event, "data": event.data, **({"id": event.id} if event.id else {})}


class Checker:
    """Requests whose answers must match the document."""

    def __init__(self, gateway: Client, auth: dict[str, str]) -> None:
        self.gateway = gateway
        self.auth = auth
        self.checked: set[tuple[str, str, int]] = set()

    async def __call__(self, method: str, path: str, template: str, status: int, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", self.auth)
        response = await self.gateway.request(method, path, headers=headers, **kwargs)
        assert response.status == status, await response.text()
        media = response.headers["Content-Type"].split(";")[0]
        body = await response.json() if "json" in media else await response.text()
        validator = _response_validator(method, template, status, media)
        # An event stream's schema describes each event (OpenAPI 3.1), as schemathesis reads it.
        items = [_event(e) for e in parse_sse(body)] if media == "text/event-stream" else [body]
        assert items
        errors = [error.message for item in items for error in validator.iter_errors(item)]
        assert errors == [], (method, template, status, errors)
        self.checked.add((method, template, status))
        return body


async def test_real_answers_match_the_document(stack: Stack, gateway: Client, auth: dict[str, str]) -> None:
    check = Checker(gateway, auth)
    await check("GET", "/healthz", "/healthz", 200)
    await check("GET", "/readyz", "/readyz", 200)
    conversation = await check("POST", "/api/v1/conversations", "/api/v1/conversations", 201, json={"title": "doc"})
    cid = conversation["id"]
    await check("GET", f"/api/v1/conversations/{cid}", "/api/v1/conversations/{conversation_id}", 200)
    messages = "/api/v1/conversations/{conversation_id}/messages"
    started = await check("POST", f"/api/v1/conversations/{cid}/messages", messages, 202, json={"content": "Hi"})
    run_id = started["run"]["id"]
    await read_sse(gateway, started["events_url"], auth)
    await check("GET", f"/api/v1/conversations/{cid}/messages", messages, 200)
    await check("GET", f"/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}", 200)
    await check("GET", f"/api/v1/runs?conversation_id={cid}", "/api/v1/runs", 200)
    await check("GET", f"/api/v1/runs/{run_id}/budget", "/api/v1/runs/{run_id}/budget", 200)
    stream = await check("GET", f"/api/v1/runs/{run_id}/events", "/api/v1/runs/{run_id}/events", 200)
    run_event = _validator(["components", "schemas", "RunEvent"])
    for event in parse_sse(stream):
        assert list(run_event.iter_errors(json.loads(event.data))) == [], event
    await check("POST", f"/api/v1/runs/{run_id}/cancel", "/api/v1/runs/{run_id}/cancel", 200)
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    body = {"conversation_id": cid, "content": "call lookup", "client_tools": [tool], "mode": "interactive"}
    await check("POST", "/api/v1/runs", "/api/v1/runs", 202, json=body)
    agent_body = {"name": f"doc-{uuid.uuid4().hex[:8]}", "model_route": "demo", "limits": {"max_steps": 3}}
    agent = await check("POST", "/api/v1/agents", "/api/v1/agents", 201, json=agent_body)
    await check("GET", "/api/v1/agents", "/api/v1/agents", 200)
    await check("PATCH", f"/api/v1/agents/{agent['id']}", "/api/v1/agents/{agent_id}", 200, json={"description": "d"})
    await check("GET", f"/api/v1/agents/{agent['id']}/budget", "/api/v1/agents/{agent_id}/budget", 200)
    confirmation = await runtime_confirmation(stack)
    await check("GET", "/api/v1/confirmations?state=all", "/api/v1/confirmations", 200)
    await check("GET", f"/api/v1/confirmations/{confirmation.id}", "/api/v1/confirmations/{confirmation_id}", 200)
    token = await check("POST", "/api/v1/tokens", "/api/v1/tokens", 201, json={"label": "doc", "ttl_seconds": 60})
    await check("GET", "/api/v1/tokens", "/api/v1/tokens", 200)
    await check("DELETE", f"/api/v1/tokens/{token['id']}", "/api/v1/tokens/{token_id}", 200)
    await check("GET", "/api/v1/keys", "/api/v1/keys", 200)
    await check("GET", "/api/v1/usage/records", "/api/v1/usage/records", 200)
    await check("GET", "/api/v1/usage/summary?group_by=agent,run,day", "/api/v1/usage/summary", 200)
    await check("GET", "/api/v1/budget", "/api/v1/budget", 200)
    await check("GET", "/v1/models", "/v1/models", 200)
    chat = {"model": "steward", "messages": [{"role": "user", "content": "Hi"}]}
    await check("POST", "/v1/chat/completions", "/v1/chat/completions", 200, json=chat)
    # Refusals: problem+json, and OpenAI's shape under /v1.
    await check("GET", "/api/v1/agents", "/api/v1/agents", 401, headers={})
    await check("GET", f"/api/v1/runs/{uuid.uuid4()}", "/api/v1/runs/{run_id}", 404)
    await check("POST", "/api/v1/keys", "/api/v1/keys", 400, json={"provider": "x"})
    await check("GET", "/v1/models/nobody", "/v1/models/{model}", 404)
    assert len(check.checked) == 31


async def test_a_body_that_breaks_the_document_is_400_with_a_pointer(gateway: Client, auth: dict[str, str]) -> None:
    body = {"name": "x", "limits": {"max_steps": 3, "timeout_seconds": "soon"}, "tools": ["a", 3]}
    response = await gateway.post("/api/v1/agents", json=body, headers=auth)
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    problem = await response.json()
    assert problem["metadata"] == {
        "field": "limits.timeout_seconds",
        "in": "body",
        "pointer": "/limits/timeout_seconds",
    }
    assert problem["detail"] == "limits.timeout_seconds: must be of type number or null"


@pytest.mark.parametrize(
    ("path", "body", "field", "pointer"),
    [
        ("/api/v1/runs", {"content": "Hi"}, "conversation_id", "/conversation_id"),
        (
            "/api/v1/runs",
            {"conversation_id": "c", "content": [{"type": "text", "text": " "}]},
            "content[0].text",
            "/content/0/text",
        ),
        (
            "/api/v1/runs",
            {"conversation_id": "c", "client_tools": [{"nam": "x"}]},
            "client_tools[0].nam",
            "/client_tools/0/nam",
        ),
        ("/api/v1/runs", {"conversation_id": "c", "mode": "fast"}, "mode", "/mode"),
        ("/api/v1/conversations", {"titel": "x"}, "titel", "/titel"),
        ("/api/v1/tokens", {"ttl_seconds": 0}, "ttl_seconds", "/ttl_seconds"),
        ("/api/v1/keys", {"provider": "anthropic", "secret": "s", "label": ["x"]}, "label", "/label"),
    ],
)
async def test_body_violations_name_the_field(
    gateway: Client, auth: dict[str, str], path: str, body: dict[str, Any], field: str, pointer: str
) -> None:
    response = await gateway.post(path, json=body, headers=auth)
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert (await response.json())["metadata"] == {"field": field, "in": "body", "pointer": pointer}


@pytest.mark.parametrize(
    ("method", "path", "raw", "field"),
    [
        ("POST", "/api/v1/agents", b'{"limits": {"max_steps": 3.0}}', "limits.max_steps"),
        ("POST", "/api/v1/agents", b'{"limits": {"timeout_seconds": NaN}}', "limits.timeout_seconds"),
        ("POST", "/api/v1/agents", b'{"limits": {"tool_timeout_seconds": -Infinity}}', "limits.tool_timeout_seconds"),
        ("PUT", "/api/v1/budget", b'{"limit_micros": 5.0, "period": "day"}', "limit_micros"),
        ("POST", "/api/v1/tokens", b'{"ttl_seconds": 60.0}', "ttl_seconds"),
    ],
)
async def test_integers_are_written_without_a_fraction_and_numbers_are_finite(
    gateway: Client, auth: dict[str, str], method: str, path: str, raw: bytes, field: str
) -> None:
    """As the handlers read them before the document took their checks over: JSON Schema alone takes 3.0 as an
    integer, and Python's json reads NaN and Infinity, which no bound refuses (NaN compares false)."""
    headers = {**auth, "Content-Type": "application/json"}
    response = await gateway.request(method, path, data=raw, headers=headers)
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert (await response.json())["metadata"]["field"] == field


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/agents?page_size=ten", "page_size"),
        ("/api/v1/agents?page_size=1000000", "page_size"),
        ("/api/v1/confirmations?state=sleeping", "state"),
        (f"/api/v1/runs/{uuid.uuid4()}/events?last_event_id=-1", "last_event_id"),
        ("/api/v1/usage/summary?group_by=week", "group_by"),
    ],
)
async def test_query_violations_name_the_parameter(
    gateway: Client, auth: dict[str, str], path: str, field: str
) -> None:
    response = await gateway.get(path, headers=auth)
    assert await refusal(response, 400) == "INVALID_ARGUMENT"
    assert (await response.json())["metadata"] == {"field": field, "in": "query"}


async def test_authentication_comes_before_validation(gateway: Client) -> None:
    response = await gateway.post("/api/v1/agents", json={"tools": 3})
    assert await refusal(response, 401) == "TOKEN_MISSING"


async def test_validation_keeps_the_gateways_body_errors(gateway: Client, auth: dict[str, str]) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    assert await refusal(await gateway.post("/api/v1/agents", data=b"{bad", headers=headers), 400) == "MALFORMED_JSON"
    text = {**auth, "Content-Type": "text/plain"}
    assert (
        await refusal(await gateway.post("/api/v1/agents", data=b"{}", headers=text), 415) == "UNSUPPORTED_MEDIA_TYPE"
    )


def test_validators_are_compiled_once() -> None:
    assert openapi_validation.operations() is openapi_validation.operations()
    assert ("POST", "/api/v1/agents") in openapi_validation.operations()
    assert all(path.startswith("/api/") for _, path in openapi_validation.operations())


def test_the_page_token_parameter_takes_the_longest_token_the_services_issue() -> None:
    schema = openapi.document()["components"]["parameters"]["PageToken"]["schema"]
    assert schema["maxLength"] >= paging.MAX_TOKEN_LENGTH
    # A summary grouped by agent, run and day with 64-character ids: over the 200 characters once allowed.
    longest = paging.encode("usage-summaries.1:agent_id,run_id,day", ["a" * 64, "r" * 64, "2026-12-07"])
    assert 200 < len(longest) <= schema["maxLength"]
    assert re.fullmatch(schema["pattern"], longest)  # a token is URL-safe base64: it needs no escaping


def test_no_key_in_the_document_is_prose_split_off_by_a_comma() -> None:
    """A comma inside an unquoted flow-mapping value (`{description: a, b}`) makes `b` a key: none has a space."""

    def keys(node: object) -> list[str]:
        if isinstance(node, dict):
            return [str(key) for key in node] + [k for value in node.values() for k in keys(value)]
        if isinstance(node, list):
            return [k for item in node for k in keys(item)]
        return []

    found = keys(openapi.document())
    assert len(found) > 500
    assert [key for key in found if any(c.isspace() for c in key)] == []
