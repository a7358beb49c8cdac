"""Shared fixtures: one in-process stack per session, and a gateway on a real HTTP port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    async with running_stack(data_dir) as running:
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
