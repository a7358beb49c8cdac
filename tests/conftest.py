"""Shared fixtures: one in-process stack per session, a gateway on a real HTTP port, and every gateway answer
checked against the OpenAPI document."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.openapi_responses import VIOLATIONS
from tests.support.stack import Stack, running_stack

# Every gateway the suite starts, in this process or as a subprocess, checks its answers against the document.
os.environ["STEWARD_VALIDATE_RESPONSES"] = "1"


@pytest.fixture(autouse=True)
def answers_match_the_document() -> Iterator[None]:
    """A test fails when a gateway in this process gave an answer the OpenAPI document does not describe."""
    before = len(VIOLATIONS)
    yield
    found = VIOLATIONS[before:]
    del VIOLATIONS[before:]
    assert found == []


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    # The default agent stays on the demo model: the default route ("auto") would follow any provider key a test
    # puts for the dev user to a real upstream (tests/test_real_model_doc.py tests "auto" on a stack of its own).
    async with running_stack(data_dir, runtime={"default_model_route": "demo"}) as running:
        yield running


@pytest.fixture(scope="session")
async def gateway(stack: Stack) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A gateway served over real HTTP on an ephemeral port, talking to the stack over gRPC."""
    server = TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)
    async with TestClient(server) as client:
        yield client


@pytest.fixture
def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.dev_token}"}
