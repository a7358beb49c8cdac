"""Client test fixtures: `steward.client` pointed at the session's gateway over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from steward.client import AsyncClient
from tests.support.stack import Stack


@pytest.fixture
def base_url(gateway: TestClient[Any, Any]) -> str:
    return str(gateway.make_url("")).rstrip("/")


@pytest.fixture
async def client(base_url: str, stack: Stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url, stack.dev_token) as steward:
        yield steward
