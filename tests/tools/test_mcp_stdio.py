"""The client manager against the example notes server over stdio: a real subprocess per manager."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from examples.notes_mcp import read_applied_writes
from services.runtime.tools.classify import ToolHints
from services.runtime.tools.mcp_client import McpClientManager
from services.runtime.tools.model import ToolCallStatus, ToolResult
from tests.tools.servers import REPO, alive, child_servers, eventually, kill, stdio_server, tools_config

SDK_SAFE_ENV = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}  # what the SDK adds to every stdio child


def key() -> str:
    return f"test-{uuid.uuid4()}"


async def test_tools_are_listed_with_their_annotations(stdio_manager: McpClientManager) -> None:
    tools = {tool.name: tool for tool in stdio_manager.definitions()}
    assert set(tools) == {
        "notes.list_notes",
        "notes.read_note",
        "notes.list_applied_writes",
        "notes.create_note",
        "notes.update_note",
        "notes.delete_note",
    }
    assert tools["notes.list_notes"].hints == ToolHints(read_only=True)
    assert tools["notes.create_note"].hints == ToolHints(read_only=False, destructive=False, idempotent=False)
    assert tools["notes.update_note"].hints == ToolHints(read_only=False, destructive=True, idempotent=True)
    assert tools["notes.delete_note"].hints == ToolHints(read_only=False, destructive=True, idempotent=True)
    create = tools["notes.create_note"]
    assert (create.server, create.remote_name) == ("notes", "create_note")
    assert create.input_schema["required"] == ["title"]
    assert create.input_schema["additionalProperties"] is False


async def test_calls_read_and_write(stdio_manager: McpClientManager) -> None:
    notes = stdio_manager.servers["notes"]
    created = await notes.call("create_note", {"title": "Buy milk", "tags": ["home"]}, idempotency_key=None, timeout=5)
    assert created.status is ToolCallStatus.OK
    note_id = created.structured["note"]["id"]
    assert note_id in created.text  # the text the model reads carries the result

    read = await notes.call("read_note", {"id": note_id}, idempotency_key=None, timeout=5)
    assert read.status is ToolCallStatus.OK
    assert read.structured["note"]["title"] == "Buy milk"

    updated = await notes.call("update_note", {"id": note_id, "body": "2 litres"}, idempotency_key=key(), timeout=5)
    assert updated.structured["note"]["body"] == "2 litres"
    listed = await notes.call("list_notes", {"tag": "home"}, idempotency_key=None, timeout=5)
    assert [n["id"] for n in listed.structured["notes"]] == [note_id]


async def test_an_idempotency_key_applies_a_write_once(stdio_manager: McpClientManager, module_data: Path) -> None:
    notes = stdio_manager.servers["notes"]
    k = key()
    first = await notes.call("create_note", {"title": "once"}, idempotency_key=k, timeout=5)
    again = await notes.call("create_note", {"title": "once"}, idempotency_key=k, timeout=5)
    assert (first.status, again.status) == (ToolCallStatus.OK, ToolCallStatus.OK)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.structured["note"]["id"] == first.structured["note"]["id"]  # the recorded result

    record = [w for w in read_applied_writes(module_data) if w.idempotency_key == k]
    assert len(record) == 1
    assert (record[0].tool, record[0].arguments) == ("create_note", {"title": "once"})
    listed = await notes.call("list_notes", {}, idempotency_key=None, timeout=5)
    assert sum(n["title"] == "once" for n in listed.structured["notes"]) == 1

    other = await notes.call("create_note", {"title": "other"}, idempotency_key=k, timeout=5)
    assert other.status is ToolCallStatus.TOOL_ERROR  # the same key for another call is refused
    assert "already used for a different call" in other.text


async def test_a_tool_error_is_a_result_not_an_exception(stdio_manager: McpClientManager) -> None:
    result = await stdio_manager.servers["notes"].call(
        "read_note", {"id": "n_000000000000"}, idempotency_key=None, timeout=5
    )
    assert result.status is ToolCallStatus.TOOL_ERROR
    assert result.is_error
    assert not result.status.outcome_unknown
    assert "note n_000000000000 not found" in result.text


async def test_a_slow_write_times_out_and_the_record_tells_what_happened(
    stdio_manager: McpClientManager, module_data: Path
) -> None:
    notes = stdio_manager.servers["notes"]
    k = key()
    started = anyio.current_time()
    slow = await notes.call("create_note", {"title": "slow", "delay_seconds": 1.0}, idempotency_key=k, timeout=0.3)
    assert slow.status is ToolCallStatus.TIMEOUT
    assert slow.status.outcome_unknown
    assert anyio.current_time() - started < 0.9

    # The server finishes the accepted write; a retry with the same key is answered from the record.
    await eventually(lambda: any(w.idempotency_key == k for w in read_applied_writes(module_data)), what="the write")
    retry = await notes.call("create_note", {"title": "slow", "delay_seconds": 1.0}, idempotency_key=k, timeout=5)
    assert (retry.status, retry.replayed) == (ToolCallStatus.OK, True)
    assert sum(w.idempotency_key == k for w in read_applied_writes(module_data)) == 1


async def test_reconnects_after_the_server_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "notes.db"
    async with McpClientManager(tools_config(notes=stdio_server(data))) as manager:
        notes = manager.servers["notes"]
        created = await notes.call("create_note", {"title": "survives"}, idempotency_key=None, timeout=10)
        assert created.status is ToolCallStatus.OK
        [first_pid] = child_servers(str(data))

        kill(first_pid)
        await eventually(lambda: notes.last_error is not None, what="the session to end")
        assert notes.last_error == "the session ended (the server exited or closed the connection)"
        await eventually(lambda: notes.connects == 2 and notes.available, what="a new session")
        [second_pid] = child_servers(str(data))
        assert second_pid != first_pid
        read = await notes.call("read_note", {"id": created.structured["note"]["id"]}, idempotency_key=None, timeout=5)
        assert read.status is ToolCallStatus.OK  # the new process serves the same data file


async def test_a_write_in_flight_when_the_server_dies_is_lost_and_retried_once(tmp_path: Path) -> None:
    data = tmp_path / "notes.db"
    async with McpClientManager(tools_config(notes=stdio_server(data))) as manager:
        notes = manager.servers["notes"]
        with anyio.fail_after(15):
            await manager.wait_ready()
        k = key()
        async with anyio.create_task_group() as tg:

            async def kill_mid_write() -> None:
                await eventually(lambda: child_servers(str(data)) != [], what="the server process")
                await anyio.sleep(0.3)  # the call is in the server's delay by now
                kill(child_servers(str(data))[0])

            tg.start_soon(kill_mid_write)
            lost = await notes.call("create_note", {"title": "t", "delay_seconds": 1}, idempotency_key=k, timeout=10)
        assert lost.status is ToolCallStatus.CONNECTION_LOST
        assert lost.status.outcome_unknown
        assert read_applied_writes(data) == []  # killed before it applied

        retried = await notes.call("create_note", {"title": "t", "delay_seconds": 1}, idempotency_key=k, timeout=10)
        assert (retried.status, retried.replayed) == (ToolCallStatus.OK, False)
        assert [w.idempotency_key for w in read_applied_writes(data)] == [k]


async def test_a_stdio_server_sees_only_the_env_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEWARD_TEST_PARENT_SECRET", "must-not-leak")
    data, dump = tmp_path / "notes.db", tmp_path / "child.env"
    passed = {"NOTES_MCP_DATA": str(data), "ENV_DUMP": str(dump), "NOTES_PYTHON": sys.executable}
    # A shell records the environment it was started with, then becomes the notes server (no --data:
    # it must find NOTES_MCP_DATA in its environment).
    wrapper = 'env > "$ENV_DUMP" && exec "$NOTES_PYTHON" -m examples.notes_mcp --transport stdio'
    server = stdio_server(data, command="/bin/sh", args=["-c", wrapper], env=passed)
    async with McpClientManager(tools_config(notes=server)) as manager:
        result = await manager.servers["notes"].call("list_notes", {}, idempotency_key=None, timeout=10)
        assert result.status is ToolCallStatus.OK
    assert data.exists()

    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "STEWARD_TEST_PARENT_SECRET" not in seen
    assert {name: seen[name] for name in passed} == passed
    shell_own = {"PWD", "OLDPWD", "SHLVL", "_"}
    assert set(seen) <= set(passed) | SDK_SAFE_ENV | shell_own
    assert len(os.environ) > len(seen)  # the parent had more to leak


async def test_closing_the_manager_ends_calls_and_stops_the_server(tmp_path: Path) -> None:
    data = tmp_path / "notes.db"
    manager = McpClientManager(tools_config(notes=stdio_server(data, tools=["list_*", "read_note"])))
    manager.start()
    with anyio.fail_after(15):
        await manager.wait_ready()
    listed = {t.name for t in manager.definitions()}
    assert listed == {"notes.list_notes", "notes.read_note", "notes.list_applied_writes"}  # the allow-list
    [pid] = child_servers(str(data))
    results: list[ToolResult] = []

    async def slow_write() -> None:
        notes = manager.servers["notes"]
        results.append(await notes.call("list_notes", {"limit": 1}, idempotency_key=None, timeout=5))
        results.append(
            await notes.call("create_note", {"title": "t", "delay_seconds": 0.5}, idempotency_key=None, timeout=5)
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_write)
        await eventually(lambda: len(results) == 1, what="the first call")
        await anyio.sleep(0.1)  # the write is in the server's delay
        with anyio.fail_after(10):
            await manager.aclose()
    assert [r.status for r in results] == [ToolCallStatus.OK, ToolCallStatus.CONNECTION_LOST]
    assert not alive(pid)
    after = await manager.servers["notes"].call("list_notes", {}, idempotency_key=None, timeout=1)
    assert after.status is ToolCallStatus.UNAVAILABLE
    assert after.status.not_run


async def test_an_unstartable_server_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    config = tools_config(notes=stdio_server(tmp_path / "x.db", command=str(REPO / "no-such-binary")))
    async with McpClientManager(config) as manager:
        result = await manager.servers["notes"].call("list_notes", {}, idempotency_key=None, timeout=0.5)
    assert result.status is ToolCallStatus.UNAVAILABLE
    assert result.status.not_run
    assert "unavailable" in result.text
    assert "No such file" in (manager.servers["notes"].last_error or "")
