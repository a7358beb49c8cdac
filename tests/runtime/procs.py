"""Crash-test harness: the store, provider and confirm services in this process, runtimes as real processes.

Each runtime runs as `python -m services.runtime` with a short lease and sweep interval, in its own process
group, its JSON log on a file per start. It can be killed with SIGKILL (alone, or with the notes MCP server
it runs over stdio), frozen with SIGSTOP and thawed, and started again. Every process a runtime started is
found by its process group and killed when the harness closes, even one that a killed runtime left behind.

Linux only: processes are inspected through /proc (children, bytes read, bytes waiting on a pipe).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sys
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.confirm.server import create_server as create_confirm
from services.confirm.settings import ConfirmSettings
from services.provider.server import create_server as create_provider
from services.provider.settings import ProviderSettings
from services.store.server import create_server as create_store
from services.store.settings import StoreSettings
from steward.rpc.server import GrpcServer

REPO = Path(__file__).resolve().parents[2]
NOTES_MODULE = "examples.notes_mcp"
LEASE_SECONDS = 2
SWEEP_INTERVAL = 0.5


@dataclass
class Backplane:
    """The services a runtime talks to, running in this process."""

    secret: str
    store: GrpcServer
    provider: GrpcServer
    confirm: GrpcServer
    data_dir: Path

    def address(self, server: GrpcServer) -> str:
        return f"127.0.0.1:{server.port}"


@asynccontextmanager
async def backplane(
    data_dir: Path, *, database_url: str = "", demo_token_interval: float = 0.01
) -> AsyncIterator[Backplane]:
    """Store, provider (the demo model, one token per `demo_token_interval`) and confirm, in this process.
    `database_url` (e.g. Postgres) is shared by the store and confirm services; empty means SQLite files."""
    secret = secrets.token_urlsafe(32)
    base: dict[str, object] = {"internal_secret": secret, "data_dir": data_dir, "log_json": False}
    store_settings = {"token_pepper": secrets.token_urlsafe(32), "retention_interval": 0, "live_poll_seconds": 0.2}
    store = await create_store(
        StoreSettings.model_validate({**base, **store_settings, "database_url": database_url}), "127.0.0.1:0"
    )
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    provider = await create_provider(
        ProviderSettings.model_validate({**base, "demo_token_interval": demo_token_interval, "master_key": master_key}),
        "127.0.0.1:0",
    )
    confirm = await create_confirm(
        ConfirmSettings.model_validate({**base, "database_url": database_url, "live_poll_seconds": 0.2}), "127.0.0.1:0"
    )
    try:
        yield Backplane(secret, store, provider, confirm, data_dir)
    finally:
        for server in (confirm, provider, store):
            await server.stop(0.5)


def tools_file(directory: Path, notes_data: Path) -> Path:
    """A tools config with the example notes server over stdio, trusted."""
    config = {
        "servers": {
            "notes": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", NOTES_MODULE, "--transport", "stdio", "--data", str(notes_data)],
                "cwd": str(REPO),
                "trust": "trusted",
            }
        }
    }
    path = directory / "tools.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# /proc helpers


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children(pid: int, marker: str) -> list[int]:
    """Live children of `pid` whose command line contains `marker`."""
    found = []
    for child in _pids():
        fields = _stat_fields(child)
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid and marker in _cmdline(child):
            found.append(child)
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    members = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(pid)
    return members


def bytes_read(pid: int) -> int:
    """Bytes the process has read with read() and friends so far (/proc/<pid>/io rchar)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar for {pid}")


def stdin_waiting(pid: int) -> int:
    """Bytes written to the process's stdin that it has not read yet: FIONREAD on every pipe it holds open for
    reading (an MCP stdio server moves its wire off fd 0, so the pipe is found by its mode, not its number)."""
    waiting = 0
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{entry}").startswith("pipe:"):
                continue
            flags = int(Path(f"/proc/{pid}/fdinfo/{entry}").read_text().split("flags:")[1].split()[0], 8)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                continue
            fd = os.open(f"/proc/{pid}/fd/{entry}", os.O_RDONLY | os.O_NONBLOCK)  # the same pipe, read nothing
        except OSError:
            continue  # closed meanwhile
        try:
            count = array.array("i", [0])
            fcntl.ioctl(fd, termios.FIONREAD, count)
            waiting += count[0]
        finally:
            os.close(fd)
    return waiting


async def eventually(condition: Callable[[], bool], *, within: float = 15.0, what: str = "condition") -> None:
    """Wait until `condition()` holds, checking every 20 ms; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], *, within: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


# Runtime processes


@dataclass
class RuntimeProcess:
    """One runtime replica as a real process, started (and restarted) with the same settings."""

    name: str
    backplane: Backplane
    directory: Path
    tools: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    starts: int = 0
    process: asyncio.subprocess.Process | None = None
    groups: list[int] = field(default_factory=list)  # the process group of every start

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("STEWARD_")}
        bp = self.backplane
        env.update(
            {
                "STEWARD_INTERNAL_SECRET": bp.secret,
                "STEWARD_STORE_ADDRESS": bp.address(bp.store),
                "STEWARD_PROVIDER_ADDRESS": bp.address(bp.provider),
                "STEWARD_CONFIRM_ADDRESS": bp.address(bp.confirm),
                "STEWARD_RUNTIME_ADDRESS": "127.0.0.1:0",
                "STEWARD_DATA_DIR": str(self.directory),
                "STEWARD_TOOLS_FILE": str(self.tools),
                "STEWARD_LEASE_SECONDS": str(LEASE_SECONDS),
                "STEWARD_SWEEP_INTERVAL": str(SWEEP_INTERVAL),
                "STEWARD_REPLICA_ID": self.name,
                "STEWARD_LOG_JSON": "true",
                "STEWARD_LOG_LEVEL": "INFO",
                "STEWARD_SHUTDOWN_GRACE": "0.5",
                **self.extra_env,
            }
        )
        return env

    def log_path(self, start: int) -> Path:
        return self.directory / f"{self.name}.{start}.log"

    async def start(self, *, within: float = 30.0) -> None:
        """Start the process and wait until it serves (its tool servers are connected by then)."""
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        path = self.log_path(self.starts)
        with path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.runtime",
                cwd=REPO,
                env=self._env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: its tool servers can be found and killed
            )
        self.groups.append(self.process.pid)
        deadline = time.monotonic() + within
        while True:
            started = [r for r in self.records(self.starts) if r.get("event") == "grpc_server_started"]
            if started:
                self.port = int(started[0]["port"])
                return
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{path.read_text()[-4000:]}")
            await asyncio.sleep(0.05)

    def tool_server(self) -> int:
        """The pid of the notes MCP server this runtime runs over stdio."""
        [pid] = children(self.pid, NOTES_MODULE)
        return pid

    async def kill(self, *, with_tool_servers: bool = False) -> None:
        """SIGKILL the runtime (and, if asked, the tool servers it started): no shutdown code runs."""
        assert self.process is not None
        tool_servers = children(self.pid, NOTES_MODULE) if with_tool_servers else []
        self.process.send_signal(signal.SIGKILL)
        for pid in tool_servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await self.process.wait()

    def freeze(self) -> None:
        self.process_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process_signal(signal.SIGCONT)

    def process_signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def close(self) -> None:
        """Kill whatever any start of this runtime left running (runtimes, tool servers, frozen or not)."""
        for pgid in self.groups:
            for pid in group_members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process is not None and self.process.returncode is None:
            await self.process.wait()

    def records(self, start: int | None = None) -> list[dict[str, Any]]:
        """The JSON log records of one start (default: every start), in order; other lines are skipped."""
        found: list[dict[str, Any]] = []
        for number in [start] if start is not None else range(1, self.starts + 1):
            path = self.log_path(number)
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return found

    def logged(self, event: str, start: int | None = None, **fields: object) -> list[dict[str, Any]]:
        """Log records of `event` whose fields include `fields`."""
        return [
            r
            for r in self.records(start)
            if r.get("event") == event and all(r.get(key) == value for key, value in fields.items())
        ]


@asynccontextmanager
async def runtimes(
    plane: Backplane, directory: Path, notes_data: Path, names: list[str]
) -> AsyncIterator[list[RuntimeProcess]]:
    """Runtime processes (not started) sharing one tools config; every process they leave is killed at exit."""
    tools = tools_file(directory, notes_data)
    made = []
    for name in names:
        own = directory / name
        own.mkdir(exist_ok=True)
        made.append(RuntimeProcess(name=name, backplane=plane, directory=own, tools=tools))
    try:
        yield made
    finally:
        for runtime in made:
            await runtime.close()
