"""Real example MCP servers for the tool-layer tests: stdio configs, an HTTP subprocess, child-process lookup."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.runtime.tools.config import ToolsConfig

REPO = Path(__file__).resolve().parents[2]
NOTES_MODULE = "examples.notes_mcp"


def stdio_server(data: Path, **overrides: Any) -> dict[str, Any]:
    """A config entry that runs the notes server over stdio with this interpreter, from the repo root."""
    server: dict[str, Any] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", NOTES_MODULE, "--transport", "stdio", "--data", str(data)],
        "cwd": str(REPO),
        "trust": "trusted",
    }
    server.update(overrides)
    return server


def tools_config(**servers: dict[str, Any]) -> ToolsConfig:
    return ToolsConfig.model_validate({"servers": servers})


async def eventually(condition: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    """Wait until `condition()` holds, checking every 20 ms; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_servers(marker: str) -> list[int]:
    """Live child processes of this test process whose command line contains `marker` (Linux /proc)."""
    me = os.getpid()
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if _parent_of(pid) == me and marker in _cmdline(pid) and alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


class HttpNotesServer:
    """The notes server over streamable HTTP, as a subprocess on an ephemeral (then fixed) port."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = 0
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", NOTES_MODULE, "--transport", "http", "--host", "127.0.0.1", "--port", str(self.port)),
            *("--data", str(self.data)),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        self._process = process
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=15)
        self.url = line.decode().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    async def kill(self) -> None:
        """SIGKILL: the server dies without any shutdown."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout=10)
            except TimeoutError:
                await self.kill()
