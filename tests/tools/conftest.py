"""Fixtures: the example notes server over stdio and over HTTP, each behind a real McpClientManager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from services.runtime.tools.mcp_client import McpClientManager
from tests.tools.servers import HttpNotesServer, stdio_server, tools_config


@pytest.fixture(scope="module")
def module_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes") / "notes.db"


@pytest.fixture(scope="module")
async def stdio_manager(module_data: Path) -> AsyncIterator[McpClientManager]:
    """One stdio notes server shared by a module's tests (they use distinct keys and notes)."""
    async with McpClientManager(tools_config(notes=stdio_server(module_data))) as manager:
        with anyio.fail_after(15):
            await manager.wait_ready()
        yield manager


@pytest.fixture
async def http_server(tmp_path: Path) -> AsyncIterator[HttpNotesServer]:
    server = HttpNotesServer(tmp_path / "notes.db")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
