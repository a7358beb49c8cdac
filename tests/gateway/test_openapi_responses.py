"""The suite's check of every gateway answer against the OpenAPI document (gateway/openapi_responses.py): what it
finds (a drifted body, a missing Retry-After, an error text that leaks an address), that a gateway with it on
turns such an answer into a 500, and that the suite's gateways have it on."""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import openapi_responses, problems
from gateway.app import create_app
from gateway.middlewares import request_id_middleware
from gateway.openapi_responses import VIOLATIONS, check, error_text_leak, response_validation_middleware
from tests.support.stack import Stack

RUN = "/api/v1/runs/{run_id}"


def _json(status: int, body: Any, content_type: str = "application/json") -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=content_type)


def test_an_undocumented_status_is_found() -> None:
    assert check("GET", RUN, _json(418, {})) == "status 418 is not documented"


def test_an_undocumented_media_type_is_found() -> None:
    problem = check("GET", RUN, web.Response(status=404, text="gone", content_type="text/plain"))
    assert problem == "media type text/plain is not documented for status 404"


def test_a_body_that_breaks_the_schema_is_found_with_its_place() -> None:
    problem = check("GET", RUN, _json(404, {"status": "404"}, "application/problem+json"))
    assert problem is not None
    assert problem.startswith("body at /")


def test_a_documented_answer_passes() -> None:
    body = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no", "reason": "RUN_NOT_FOUND"}
    assert check("GET", RUN, _json(404, body, "application/problem+json")) is None


def _unavailable(**headers: str) -> web.Response:
    body = {"type": "about:blank", "title": "x", "status": 503, "detail": "no", "reason": "DEPENDENCY_UNAVAILABLE"}
    response = _json(503, body, "application/problem+json")
    response.headers.update(headers)
    return response


def test_a_required_header_missing_or_malformed_is_found() -> None:
    assert check("GET", RUN, _unavailable()) == "header Retry-After is required for status 503"
    assert (
        check("GET", RUN, _unavailable(**{"Retry-After": "soon"}))
        == "header Retry-After 'soon' does not match its schema"
    )
    assert check("GET", RUN, _unavailable(**{"Retry-After": "2"})) is None


def test_a_body_on_an_answer_documented_without_one_is_found() -> None:
    assert check("DELETE", "/api/v1/agents/{agent_id}", _json(204, {})) is not None
    assert check("DELETE", "/api/v1/agents/{agent_id}", web.Response(status=204)) is None


async def test_a_drifted_answer_becomes_a_500_and_is_recorded() -> None:
    async def drifted(request: web.Request) -> web.Response:
        return _json(200, {"id": request.match_info["run_id"]})  # a run without its required fields

    async def undocumented_route(request: web.Request) -> web.Response:
        return _json(200, {"anything": True})

    app = web.Application(middlewares=[request_id_middleware, response_validation_middleware])
    app.router.add_get(RUN, drifted)
    app.router.add_get("/not/in/the/document", undocumented_route)
    before = len(VIOLATIONS)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        refused = await client.get("/api/v1/runs/r1")
        assert refused.status == 500
        problem = await refused.json()
        assert problem["reason"] == "INTERNAL"
        assert f"GET {RUN}" in problem["detail"]
        assert (await client.get("/not/in/the/document")).status == 200  # only documented operations are checked
        assert (await client.head("/api/v1/runs/r1")).status == 200  # HEAD is not checked
    found = VIOLATIONS[before:]
    del VIOLATIONS[before:]  # this test's own violation, not the suite's
    assert [(v.method, v.template, v.status) for v in found] == [("GET", RUN, 200)]


RAW = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:50051: Connection refused"


def test_an_error_text_that_leaks_is_found_in_either_shape() -> None:
    problem = problems.problem(503, "DEPENDENCY_UNAVAILABLE", RAW)
    found = error_text_leak(problem)
    assert found is not None
    assert found.kind == "a gRPC address"
    openai_shaped = _json(503, {"error": {"message": RAW, "type": "server_error", "param": None, "code": "X"}})
    assert error_text_leak(openai_shaped) is not None


def test_a_clean_error_text_passes() -> None:
    clean = problems.problem(503, "DEPENDENCY_UNAVAILABLE", "the store service is unavailable; try again later")
    assert error_text_leak(clean) is None
    assert error_text_leak(_json(200, {"id": "r1", "detail": 7, "error": None})) is None


async def test_a_leaking_answer_becomes_a_500_naming_only_the_kind_and_is_recorded() -> None:
    async def leaking(request: web.Request) -> web.Response:
        return problems.problem(503, "DEPENDENCY_UNAVAILABLE", RAW)

    app = web.Application(middlewares=[request_id_middleware, response_validation_middleware])
    app.router.add_get("/not/in/the/document", leaking)  # error texts are checked on every route
    before = len(VIOLATIONS)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        refused = await client.get("/not/in/the/document")
        assert refused.status == 500
        problem = await refused.json()
    found = VIOLATIONS[before:]
    del VIOLATIONS[before:]  # this test's own violation, not the suite's
    assert problem["reason"] == "INTERNAL"
    assert problem["detail"] == "the answer's error text shows a gRPC address"
    assert [(v.template, v.status) for v in found] == [("/not/in/the/document", 503)]
    assert "ipv4:" in found[0].problem


def test_the_suites_gateways_check_their_answers(stack: Stack) -> None:
    assert os.environ["STEWARD_VALIDATE_RESPONSES"] == "1"
    assert stack.gateway_settings().validate_responses
    assert openapi_responses.response_validation_middleware in _middlewares_of(stack)
    assert openapi_responses.response_validation_middleware not in _middlewares_of(stack, validate_responses=False)


def _middlewares_of(stack: Stack, **overrides: object) -> list[object]:
    return list(create_app(stack.gateway_settings(**overrides)).middlewares)
