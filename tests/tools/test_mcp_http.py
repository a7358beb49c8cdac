"""The client manager against the example notes server over streamable HTTP, in a subprocess."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import anyio

from examples.notes_mcp import read_applied_writes
from services.runtime.tools.classify import ToolHints
from services.runtime.tools.mcp_client import McpClientManager
from services.runtime.tools.model import ToolCallStatus
from tests.tools.servers import HttpNotesServer, eventually, tools_config


def http(url: str, **overrides: object) -> dict[str, object]:
    return {"transport": "http", "url": url, "trust": "trusted", **overrides}


async def test_lists_and_calls_over_http_with_idempotency(http_server: HttpNotesServer) -> None:
    async with McpClientManager(tools_config(notes=http(http_server.url, headers={"X-Steward": "1"}))) as manager:
        with anyio.fail_after(15):
            await manager.wait_ready()
        tools = {tool.name: tool for tool in manager.definitions()}
        assert tools["notes.read_note"].hints == ToolHints(read_only=True)
        assert tools["notes.delete_note"].hints == ToolHints(read_only=False, destructive=True, idempotent=True)

        notes = manager.servers["notes"]
        key = f"http-{uuid.uuid4()}"
        first = await notes.call("create_note", {"title": "over http"}, idempotency_key=key, timeout=5)
        again = await notes.call("create_note", {"title": "over http"}, idempotency_key=key, timeout=5)
        assert (first.status, first.replayed, again.replayed) == (ToolCallStatus.OK, False, True)
        note_id = first.structured["note"]["id"]
        deleted = await notes.call("delete_note", {"id": note_id}, idempotency_key=None, timeout=5)
        assert deleted.structured == {"id": note_id, "deleted": True}
        missing = await notes.call("read_note", {"id": note_id}, idempotency_key=None, timeout=5)
        assert missing.status is ToolCallStatus.TOOL_ERROR

        record = await notes.call("list_applied_writes", {}, idempotency_key=None, timeout=5)
        assert [(w["tool"], w["idempotency_key"]) for w in record.structured["writes"]] == [
            ("create_note", key),
            ("delete_note", None),
        ]
    assert [w.tool for w in read_applied_writes(http_server.data)] == ["create_note", "delete_note"]


async def test_reconnects_after_the_http_server_is_killed_and_restarted(http_server: HttpNotesServer) -> None:
    config = tools_config(notes=http(http_server.url))
    async with McpClientManager(config) as manager:
        notes = manager.servers["notes"]
        ok = await notes.call("list_notes", {}, idempotency_key=None, timeout=10)
        assert ok.status is ToolCallStatus.OK

        await http_server.kill()
        down = await notes.call("list_notes", {}, idempotency_key=None, timeout=1)
        # The request may or may not have left: either way the layer says so, and nothing raised.
        assert down.status in (ToolCallStatus.CONNECTION_LOST, ToolCallStatus.UNAVAILABLE)
        await eventually(lambda: notes.last_error is not None, what="the session to be dropped")
        assert not notes.available
        assert "ConnectError" in (notes.last_error or "")

        await http_server.start()  # same port, same data file
        back = await notes.call("list_notes", {}, idempotency_key=None, timeout=10)
        assert back.status is ToolCallStatus.OK
        assert notes.connects == 2


async def test_periodic_refresh_notices_a_dead_server_without_any_call(http_server: HttpNotesServer) -> None:
    async with McpClientManager(tools_config(notes=http(http_server.url, refresh_interval=0.2))) as manager:
        with anyio.fail_after(15):
            await manager.wait_ready()
        notes = manager.servers["notes"]
        await http_server.kill()
        await eventually(lambda: not notes.available, within=5, what="the refresh to fail")
        assert notes.tools  # the last list stays, so an agent's tool set does not flap
        refused = await notes.call("list_notes", {}, idempotency_key=None, timeout=0.3)
        assert refused.status is ToolCallStatus.UNAVAILABLE


async def test_an_unreachable_url_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with McpClientManager(tools_config(search=http(f"http://127.0.0.1:{port}/mcp"))) as manager:
        result = await manager.servers["search"].call("anything", {}, idempotency_key=None, timeout=0.5)
    assert result.status is ToolCallStatus.UNAVAILABLE
    assert result.status.not_run
    assert "ConnectError" in result.text
