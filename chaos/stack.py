"""The whole stack as real processes on fixed loopback ports, each of which can be killed and started again.

`python -m fakes` (a fake OpenAI-compatible upstream: every answer is `tok0 tok1 ... ` streamed `chunk_delay` apart),
then store, provider, confirm, runtime and gateway as `python -m <module>`, configured by `STEWARD_*` variables as
`steward up` configures them, with `make run`'s defaults unless a scenario overrides one. Every process keeps its
address across restarts (so its callers reconnect to it), and appends its log to `<data_dir>/logs/<name>.log`.

A service listed in `proxied` is reached by the runtime through a `FaultProxy` (the gateway still reaches it
directly), so that a scenario can partition or delay the runtime's path to it alone.

`tests/test_drain.py` uses it too: a test may start a process again with settings of its own (another replica id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chaos.faults import FaultProxy
from steward.errors import StewardError
from steward.rpc.client_errors import error_interceptors

__all__ = [
    "FAKE_ROUTE",
    "SERVICES",
    "ProcessStack",
    "StackOptions",
    "expected_text",
    "process_stack",
    "violations_under",
]

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("store", "provider", "confirm", "runtime", "gateway")  # start order
MODULES = {"store": "services.store", "provider": "services.provider", "confirm": "services.confirm"}
MODULES |= {"runtime": "services.runtime", "gateway": "gateway", "fake-llm": "fakes"}
FAKE_ROUTE = "fake-llm"
READY_TIMEOUT = 60.0


def expected_text(pieces: int) -> str:
    """The fake upstream's whole answer."""
    return "".join(f"tok{index} " for index in range(pieces))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class StackOptions:
    database_url: str = ""  # empty: SQLite files in the data directory
    pieces: int = 40  # the fake upstream's answer, in text pieces
    chunk_delay: float = 0.05  # seconds between them
    proxied: frozenset[str] = frozenset()  # services the runtime reaches through a FaultProxy
    runtime: Mapping[str, object] = field(default_factory=dict)  # runtime settings (lease_seconds=...)
    gateway: Mapping[str, object] = field(default_factory=dict)
    common: Mapping[str, object] = field(default_factory=dict)  # every service's (shutdown_grace=...)


class ProcessStack:
    def __init__(self, data_dir: Path, options: StackOptions) -> None:
        self.data_dir = data_dir
        self.options = options
        self.addresses = {name: f"127.0.0.1:{_free_port()}" for name in SERVICES if name != "gateway"}
        self.gateway_port = _free_port()
        self.upstream_port = _free_port()
        self.dev_token = secrets.token_urlsafe(32)
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.starts: dict[str, int] = {}  # how many times each process was started
        self.internal_secret = secrets.token_urlsafe(32)  # a test may mint principal tokens with it
        self._pepper = secrets.token_urlsafe(32)
        self._master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self._logs = data_dir / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def log_path(self, name: str) -> Path:
        return self._logs / f"{name}.log"

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.returncode is None

    # Lifecycle.

    async def start_all(self) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)
        self._write_config()
        for name in self.options.proxied:
            proxy = FaultProxy(self.addresses[name])
            await proxy.start()
            self.proxies[name] = proxy
        # In waves: the store first (on a shared database it creates the schema), provider and confirm together, then
        # the runtime (it reclaims runs from the store and needs the others), then the gateway.
        for wave in ((FAKE_ROUTE, "store"), ("provider", "confirm"), ("runtime",), ("gateway",)):
            await asyncio.gather(*(self.start(name) for name in wave))

    async def start(self, name: str, **settings: object) -> float:
        """Start `name` (again) and wait until it serves; the seconds that took. `settings` override its
        configuration for this start (`replica_id="successor"`)."""
        if self.running(name):
            raise RuntimeError(f"{name} is running")
        began = time.monotonic()
        args = ["--port", str(self.upstream_port), "--pieces", str(self.options.pieces)] if name == FAKE_ROUTE else []
        args += ["--chunk-delay", str(self.options.chunk_delay)] if name == FAKE_ROUTE else []
        with self.log_path(name).open("ab") as log:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[name],
                *args,
                env=self._environment(name, settings),
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.starts[name] = self.starts.get(name, 0) + 1
        await self._ready(name)
        return time.monotonic() - began

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the process `name` (and, for SIGKILL, to every process it started, as a crash of its pod
        would: the runtime's stdio tool servers)."""
        process = self.processes[name]
        if sig == signal.SIGKILL:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)

    async def wait_exit(self, name: str, within: float = 30.0) -> int:
        return await asyncio.wait_for(self.processes[name].wait(), within)

    async def crash(self, name: str) -> None:
        """SIGKILL and reap."""
        self.kill(name)
        await self.wait_exit(name)

    async def terminate(self, name: str, within: float = 30.0) -> tuple[int, float]:
        """SIGTERM and wait: the exit code and the seconds the process took to exit."""
        began = time.monotonic()
        self.kill(name, signal.SIGTERM)
        code = await self.wait_exit(name, within)
        return code, time.monotonic() - began

    async def close(self) -> None:
        # The gateway and the runtime together, then the rest (the runtime's last writes land in the store first).
        for wave in (("gateway", "runtime"), ("provider", "confirm", "store", FAKE_ROUTE)):
            await asyncio.gather(*(self._stop(name) for name in wave))
        for proxy in self.proxies.values():
            await proxy.stop()

    async def _stop(self, name: str) -> None:
        if self.running(name):
            self.kill(name, signal.SIGTERM)
            try:
                await self.wait_exit(name, 15)
            except TimeoutError:
                await self.crash(name)
        # Whatever a crashed process left behind in its session (a tool server).
        process = self.processes.get(name)
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_size(self, name: str) -> int:
        """Where `name`'s log ends now: `log_entries(name, since=...)` reads what was appended after."""
        path = self.log_path(name)
        return path.stat().st_size if path.exists() else 0

    def log_entries(self, name: str, since: int = 0) -> list[dict[str, object]]:
        """The JSON records of `name`'s log from byte `since` on (every start's, in order)."""
        with self.log_path(name).open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    # Configuration.

    def _write_config(self) -> None:
        upstream = f"http://127.0.0.1:{self.upstream_port}/v1"
        routes = {
            "upstreams": {FAKE_ROUTE: {"protocol": "openai", "base_url": upstream, "keyless": True}},
            "routes": {FAKE_ROUTE: {"description": "the fake upstream", "primary": f"{FAKE_ROUTE}/fake-model"}},
        }
        (self.data_dir / "routes.json").write_text(json.dumps(routes))
        notes = {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "examples.notes_mcp", "--transport", "stdio", "--data", str(self.data_dir / "notes.db")],
            "cwd": str(REPO),
            "trust": "trusted",
        }
        (self.data_dir / "tools.json").write_text(json.dumps({"servers": {"notes": notes}}))

    def _environment(self, name: str, settings: Mapping[str, object]) -> dict[str, str]:
        values: dict[str, object] = {
            "data_dir": self.data_dir,
            "internal_secret": self.internal_secret,
            "log_json": "true",
            "log_level": "INFO",
            **{f"{service}_address": address for service, address in self.addresses.items()},
            **self.options.common,
        }
        if self.options.database_url and name in ("store", "provider", "confirm"):
            values["database_url"] = self.options.database_url
        if name == "store":
            values |= {"token_pepper": self._pepper, "retention_interval": 0}
        elif name == "provider":
            values |= {"master_key": self._master_key, "routes_file": self.data_dir / "routes.json"}
        elif name == "runtime":
            values |= {
                "tools_file": self.data_dir / "tools.json",
                "default_agent_tools": json.dumps(["notes.*"]),
                "default_model_route": FAKE_ROUTE,
                **{f"{service}_address": proxy.address for service, proxy in self.proxies.items()},
                **self.options.runtime,
            }
        elif name == "gateway":
            values |= {
                "dev_token": self.dev_token,
                "gateway_host": "127.0.0.1",
                "gateway_port": self.gateway_port,
                "rate_limit_per_second": 0,
                # Every answer checked against the OpenAPI document, and no error text showing an address, a port,
                # a gRPC message, a trace or a path: a violation is logged (`violations` finds it) and answers 500.
                "validate_responses": "true",
                **self.options.gateway,
            }
        env = {key: value for key, value in os.environ.items() if not key.startswith("STEWARD_")}
        env |= {f"STEWARD_{key.upper()}": str(value) for key, value in (values | dict(settings)).items()}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "libs"), str(REPO)])
        return env

    # Readiness.

    async def _ready(self, name: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.log_tail(name)}")
            if await self.readiness(name):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} was not ready after {READY_TIMEOUT:.0f} s\n{self.log_tail(name)}")

    async def readiness(self, name: str, deadline: float = 1.0) -> bool | None:
        """What `name`'s readiness probe says now: True ready (gRPC health SERVING, /readyz 200, a TCP accept),
        False answering but not ready (draining), None nothing answering."""
        if name == "gateway":
            try:
                async with httpx.AsyncClient(timeout=deadline) as http:
                    status: int = (await http.get(f"{self.url}/readyz")).status_code
                    return status == 200
            except httpx.HTTPError:
                return None
        if name == FAKE_ROUTE:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return None
            writer.close()
            return True
        health = await _health_status(self.addresses[name], deadline)
        return None if health is None else health == int(health_pb2.HealthCheckResponse.SERVING)


async def _health_status(address: str, deadline: float = 1.0) -> int | None:
    """The gRPC health status of `address`'s server as a whole, or None when nothing answers."""
    probe = error_interceptors(expected_failures=True)
    async with grpc.aio.insecure_channel(address, interceptors=probe) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=deadline)
        except StewardError:
            return None
    return int(reply.status)


@asynccontextmanager
async def process_stack(data_dir: Path, options: StackOptions | None = None) -> AsyncIterator[ProcessStack]:
    stack = ProcessStack(data_dir, options or StackOptions())
    try:
        await stack.start_all()
        yield stack
    finally:
        await stack.close()


def violations_under(data_dir: Path) -> list[str]:
    """The gateway answers that broke the OpenAPI document or showed internals (an address, a port, a gRPC message, a
    trace, a path), as every gateway log under `data_dir` recorded them."""
    found = []
    for path in sorted(data_dir.rglob("logs/gateway.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"response_violation"' in line:
                entry = json.loads(line)
                found.append(
                    f"{entry.get('method')} {entry.get('template')} {entry.get('status')}: {entry.get('problem')}"
                )
    return found
