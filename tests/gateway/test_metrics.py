"""/metrics: Prometheus text, no token needed, requests counted by route template and status (never by id)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support.stack import Stack

Client = TestClient[Any, Any]


async def test_requests_are_counted_by_route_template_and_status(stack: Stack) -> None:
    # A gateway of its own: its registry counts only this test's requests.
    async with TestClient(TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)) as gateway:
        auth = {"Authorization": f"Bearer {stack.dev_token}"}
        unknown = str(uuid.uuid4())
        assert (await gateway.get(f"/api/v1/conversations/{unknown}", headers=auth)).status == 404
        assert (await gateway.get(f"/api/v1/conversations/{uuid.uuid4()}", headers=auth)).status == 404
        assert (await gateway.get("/api/v1/conversations")).status == 401  # counted even when refused
        assert (await gateway.get("/api/v1/no/such/route", headers=auth)).status == 404
        response = await gateway.get("/metrics")  # no token
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    route = "/api/v1/conversations/{conversation_id}"
    assert series[f'steward_gateway_requests_total{{method="GET",route="{route}",status="404"}}'] == 2.0
    assert series['steward_gateway_requests_total{method="GET",route="/api/v1/conversations",status="401"}'] == 1.0
    assert series['steward_gateway_requests_total{method="GET",route="unmatched",status="404"}'] == 1.0
    assert series[f'steward_gateway_request_seconds_count{{method="GET",route="{route}"}}'] == 2.0
    assert series["steward_gateway_requests_in_flight"] == 1.0  # this very request
    assert unknown not in text  # ids never become labels
