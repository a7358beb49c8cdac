"""`make run`'s real processes: start `steward up`, chat over HTTP, Ctrl-C, every child gone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.sse import parse_sse

pytestmark = [pytest.mark.processes, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _read_banner(stdout: asyncio.StreamReader) -> dict[str, str]:
    lines: list[str] = []
    while not lines or lines[-1] != "Press Ctrl-C to stop.":
        raw = await asyncio.wait_for(stdout.readline(), 60)
        if not raw:
            raise AssertionError(f"steward up ended early: {lines}")
        lines.append(raw.decode().rstrip("\n"))
    text = "\n".join(lines)
    url = re.search(r"running at (http://\S+)", text)
    token = re.search(r"dev token: (\S+)", text)
    children = re.search(r"children: (.+)", text)
    assert url, text
    assert token, text
    assert children, text
    return {"url": url.group(1), "token": token.group(1), "children": children.group(1)}


@pytest.mark.parametrize(
    ("flags", "children", "answer"),
    [
        ((), ["confirm", "gateway", "provider", "runtime", "store"], "ping from a real process"),
        (
            ("--fake-llm",),
            ["confirm", "fake-llm", "gateway", "provider", "runtime", "store"],
            "Hello from the fake upstream.",
        ),
    ],
)
async def test_steward_up_serves_a_chat_and_stops_every_child(
    tmp_path: Path, flags: tuple[str, ...], children: list[str], answer: str
) -> None:
    command = ["-m", "cli", "up", "--data-dir", str(tmp_path), "--port", "0", *flags]
    process = await asyncio.create_subprocess_exec(sys.executable, *command, cwd=REPO, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        banner = await _read_banner(process.stdout)
        pids = {name: int(pid) for name, pid in (item.split("=") for item in banner["children"].split())}
        assert sorted(pids) == children
        headers = {"Authorization": f"Bearer {banner['token']}"}
        async with aiohttp.ClientSession(banner["url"], headers=headers) as http:
            async with http.post("/api/v1/conversations", json={}) as response:
                assert response.status == 201
                conversation = await response.json()
            path = f"/api/v1/conversations/{conversation['id']}/messages"
            async with http.post(path, json={"content": "ping from a real process"}) as response:
                assert response.status == 202
                accepted = await response.json()
            async with http.get(accepted["events_url"]) as response:
                events = parse_sse(await response.text())
            assert events[-1].event == "run_completed"
            text = "".join(json.loads(e.data)["data"]["text"] for e in events if e.event == "text_delta")
            assert answer in text
            async with http.get(path) as response:
                messages = (await response.json())["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"]
            assert messages[1]["content"][0]["text"] == text
        assert (tmp_path / "steward.db").exists()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 60)
    assert code == 0
    still_running = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert still_running == {}
