"""An MCP server over streamable HTTP that restarts under a run (ADR 0016): the example notes server as a real process,
SIGKILLed during a tool call and started again on the same port and data file about a second later.

A read, and an approved write to a server whose config says it honours idempotency keys, are made again with the same
key once it is back: the run completes, no `tool_call_failed`, and the write's effect is in the server's own record
(`applied_writes`) exactly once. A write whose repeat is not safe is not made again after the connection is lost: its
outcome is unknown, the ledger records it so, and the user is asked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.runtime.hooks import Hook, StepInfo, ToolCall
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.store.v1 import run_pb2
from tests.runtime.harness import ENDED, World, world
from tests.tools.servers import HttpNotesServer

pytestmark = pytest.mark.timeout(120)

DOWN_SECONDS = 1.0  # killed, then started again this long after
WRITE_DELAY = 2.0  # the approved write sleeps on the server before it applies: killed mid-call, before its effect


def _http_tools_file(directory: Path, url: str, *, idempotency_keys: bool) -> Path:
    config = {
        "servers": {
            "notes": {"transport": "http", "url": url, "trust": "trusted", "idempotency_keys": idempotency_keys}
        }
    }
    path = directory / "tools-http.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class RestartDuring(Hook):
    """Kills the notes server `after` seconds into the first call of `tool` (0: before the call is sent), and starts
    it again `DOWN_SECONDS` later (unless not `back`)."""

    def __init__(self, server: HttpNotesServer, tool: str, after: float, *, back: bool = True) -> None:
        self.server, self.tool, self.after, self.back = server, tool, after, back
        self.restarted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        if call.name != self.tool or self._task is not None:
            return
        if self.after == 0:
            await self.server.kill()
        self._task = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        if self.after > 0:
            await asyncio.sleep(self.after)
            await self.server.kill()
        if not self.back:
            return
        await asyncio.sleep(DOWN_SECONDS)
        await self.server.start()
        self.restarted.set()


async def _served(tmp_path: Path) -> HttpNotesServer:
    server = HttpNotesServer(tmp_path / "notes.db")  # the World's notes_data: w.applied_writes() reads it
    await server.start()
    return server


async def _approve_slow_write(w: World, title: str) -> confirmation_pb2.Confirmation:
    run = await w.start_run(f"create_note {title}")
    await w.wait(run.id, paused=True)
    confirmation = await w.pending_confirmation(run.id)
    edited = {"title": title, "delay_seconds": WRITE_DELAY}
    await w.decide(confirmation.id, {"outcome": "approve", "edited_arguments": edited})
    return confirmation


async def _outcome_unknown_asked(w: World, run_id: str, within: float = 60.0) -> confirmation_pb2.Confirmation:
    """The confirmation asking the user whether a write whose outcome is unknown happened, once there is one."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        listed = confirm_pb.ListConfirmationsRequest(run_id=run_id)
        for asked in (await w.confirm.ListConfirmations(listed, metadata=w.user)).confirmations:
            if asked.kind == confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN:
                return asked
        run = await w.run(run_id)
        assert run.state not in ENDED, f"the run ended ({run_pb2.RunState.Name(run.state)}); {w.applied_writes()}"
        assert asyncio.get_running_loop().time() < deadline, "no outcome-unknown confirmation"
        await asyncio.sleep(0.05)


async def test_a_read_waits_out_its_servers_restart(tmp_path: Path) -> None:
    server = await _served(tmp_path)
    hook = RestartDuring(server, "notes.list_notes", after=0)
    tools = _http_tools_file(tmp_path, server.url, idempotency_keys=False)  # reads need no key
    try:
        async with world(tmp_path, hooks=[hook], tools_file=str(tools)) as w:
            run = await w.start_run("Please list_notes for me.")
            ended = await w.wait(run.id, within=60)
            assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
            kinds = await w.events(run.id)
            assert "tool_call_failed" not in kinds, kinds
            assert "tool_call_finished" in kinds, kinds
            assert hook.restarted.is_set()  # the read's result came from the restarted server
    finally:
        await server.stop()


async def test_an_approved_write_waits_out_its_servers_restart_and_applies_once(tmp_path: Path) -> None:
    server = await _served(tmp_path)
    hook = RestartDuring(server, "notes.create_note", after=WRITE_DELAY / 4)  # mid-call, before the write applies
    tools = _http_tools_file(tmp_path, server.url, idempotency_keys=True)
    try:
        async with world(tmp_path, hooks=[hook], tools_file=str(tools)) as w:
            confirmation = await _approve_slow_write(w, "Through a restart")
            ended = await w.wait(confirmation.run_id, within=60)
            assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
            kinds = await w.events(ended.id)
            assert "tool_call_failed" not in kinds, kinds
            assert "tool_call_finished" in kinds, kinds
            assert hook.restarted.is_set()
            writes = w.applied_writes()
            assert [(x.tool, x.idempotency_key) for x in writes] == [("create_note", confirmation.id)]  # once
    finally:
        await server.stop()


async def test_a_write_whose_repeat_is_not_safe_is_not_made_again(tmp_path: Path) -> None:
    # create_note declares idempotentHint false, and this config does not say the server honours keys: a repeat after
    # the connection was lost might make a second note, so the outcome is unknown and the user is asked.
    server = await _served(tmp_path)
    hook = RestartDuring(server, "notes.create_note", after=WRITE_DELAY / 4)
    tools = _http_tools_file(tmp_path, server.url, idempotency_keys=False)
    try:
        async with world(tmp_path, hooks=[hook], tools_file=str(tools)) as w:
            confirmation = await _approve_slow_write(w, "Not twice")
            unknown = await _outcome_unknown_asked(w, confirmation.run_id)
            assert unknown.related_confirmation_id == confirmation.id
            paused = await w.wait(confirmation.run_id, paused=True)
            assert paused.pause_reason == run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION, paused
            await asyncio.wait_for(hook.restarted.wait(), timeout=30)
            await asyncio.sleep(WRITE_DELAY + 1)  # time for a repeat, had there been one, to apply
            assert w.applied_writes() == []  # killed before it applied, and never sent again
    finally:
        await server.stop()


async def test_a_server_away_past_the_tool_timeout_leaves_the_write_outcome_unknown(tmp_path: Path) -> None:
    # The bound: the write is tried again only within its tool timeout. Its later tries are not sent (the server is
    # away), but the first may have run: the outcome stays unknown, as without the retry, and the user is asked.
    server = await _served(tmp_path)
    hook = RestartDuring(server, "notes.create_note", after=WRITE_DELAY / 4, back=False)
    tools = _http_tools_file(tmp_path, server.url, idempotency_keys=True)
    try:
        async with world(tmp_path, hooks=[hook], tools_file=str(tools), default_tool_timeout=4.0) as w:
            confirmation = await _approve_slow_write(w, "Into the void")
            started = asyncio.get_running_loop().time()
            unknown = await _outcome_unknown_asked(w, confirmation.run_id)
            assert unknown.related_confirmation_id == confirmation.id
            assert asyncio.get_running_loop().time() - started < 4.0 + 6.0  # the tool timeout, and a busy machine
            assert w.applied_writes() == []
    finally:
        await server.stop()
