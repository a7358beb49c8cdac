"""A server's tool-list change reaches the runtime at once, not at the next periodic refresh (5 minutes here)."""

from __future__ import annotations

import sys

import anyio
import mcp_types as types

from services.runtime.tools.mcp_client import McpClientManager, McpServerConnection
from services.runtime.tools.model import ToolCallStatus
from tests.tools.servers import REPO, eventually, tools_config


async def test_a_tool_the_server_adds_is_listed_without_waiting_for_the_refresh() -> None:
    server = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.tools.changing_mcp"],
        "cwd": str(REPO),
        "trust": "trusted",
    }
    config = tools_config(changing=server)
    assert config.refresh_interval_for("changing") == 300  # the periodic refresh cannot be what lists it
    async with McpClientManager(config) as manager:
        with anyio.fail_after(15):
            await manager.wait_ready()
        connection = manager.servers["changing"]
        assert [tool.name for tool in manager.definitions()] == ["changing.reveal"]
        revealed = await connection.call("reveal", {"name": "secret"}, idempotency_key=None, timeout=5)
        assert revealed.status is ToolCallStatus.OK, revealed
        await eventually(lambda: "changing.secret" in {tool.name for tool in manager.definitions()}, within=5)
        answer = await connection.call("secret", {}, idempotency_key=None, timeout=5)
        assert (answer.status, "secret was revealed" in answer.text) == (ToolCallStatus.OK, True)


async def test_an_older_sessions_list_changed_notification_asks_for_a_refresh() -> None:
    """Sessions before 2026-07-28 announce changes as a notification, which the SDK hands to the message handler."""
    config = tools_config(changing={"transport": "stdio", "command": sys.executable, "trust": "trusted"})
    connection = McpServerConnection("changing", config.servers["changing"], refresh_interval=300)
    await connection._on_message(
        types.ProgressNotification(params=types.ProgressNotificationParams(progress_token=1, progress=0.5))
    )
    assert not connection._wake.is_set()
    await connection._on_message(types.ToolListChangedNotification())
    assert connection._wake.is_set()
    assert connection._changed
