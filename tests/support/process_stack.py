"""The whole stack as real processes, each of which a test can stop with SIGTERM and start again on its port.

Each process is started as `steward up` starts it (`python -m services.store`, ..., `python -m gateway`, with the
environment cli/supervisor.py gives it), its JSON log on a file per start, in its own process group. A service is
restarted on the same address with the same data directory, so its callers find it where it was. Around a stop,
`DrainWatch` records when the service's health said NOT_SERVING and when its port stopped taking connections.

Linux only (as tests/runtime/procs.py): every process group started is killed when the stack closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("store", "provider", "confirm", "runtime")
MODULES = {"store": "services.store", "provider": "services.provider", "confirm": "services.confirm"}
MODULES |= {"runtime": "services.runtime", "gateway": "gateway"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Proc:
    """One process of the stack, started (and restarted) with the same environment on the same port."""

    name: str
    env: dict[str, str]
    port: int
    directory: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    groups: list[int] = field(default_factory=list)
    spawned_at: float = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def spawn(self) -> None:
        self.starts += 1
        with (self.directory / f"{self.name}.{self.starts}.log").open("wb") as log:
            self.spawned_at = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[self.name],
                cwd=REPO,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.groups.append(self.process.pid)

    async def ready(self, within: float = 30.0) -> None:
        """Wait until it serves: gRPC health SERVING, or the gateway's /readyz 200."""
        deadline = time.monotonic() + within
        while not await self._serving():
            assert self.process is not None
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    async def start(self) -> None:
        await self.spawn()
        await self.ready()

    async def _serving(self) -> bool:
        if self.name == "gateway":
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://{self.address}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False
        async with grpc.aio.insecure_channel(self.address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def terminate(self) -> float:
        """SIGTERM; the moment it was sent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return time.monotonic()

    async def exited(self, within: float) -> tuple[int, float]:
        """Its exit code and the moment it exited, waiting at most `within` seconds."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), within)
        return code, time.monotonic()

    def log(self, start: int | None = None) -> str:
        path = self.directory / f"{self.name}.{start or self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def close(self) -> None:
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self.process is not None and self.process.returncode is None:
            await self.process.wait()


@dataclass
class ProcessStack:
    procs: dict[str, Proc]
    secret: str
    dev_token: str

    @property
    def url(self) -> str:
        return f"http://{self.procs['gateway'].address}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.dev_token}"}


@asynccontextmanager
async def process_stack(directory: Path, **settings: str) -> AsyncIterator[ProcessStack]:
    """Store, provider, confirm, runtime and gateway as processes; `settings` (STEWARD_* names) go to each."""
    secret, dev_token = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
    ports = {name: free_port() for name in MODULES}
    base = {key: value for key, value in os.environ.items() if not key.startswith("STEWARD_")}
    base |= {
        "STEWARD_DATA_DIR": str(directory),
        "STEWARD_INTERNAL_SECRET": secret,
        "STEWARD_DEV_TOKEN": dev_token,
        "STEWARD_GATEWAY_HOST": "127.0.0.1",
        "STEWARD_GATEWAY_PORT": str(ports["gateway"]),
        "STEWARD_LOG_JSON": "true",
        **{f"STEWARD_{name.upper()}_ADDRESS": f"127.0.0.1:{ports[name]}" for name in SERVICES},
        **settings,
    }
    own = {
        "store": {"STEWARD_TOKEN_PEPPER": secrets.token_urlsafe(48)},
        "provider": {"STEWARD_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()},
        "runtime": {"STEWARD_REPLICA_ID": "drain-runtime"},
    }
    procs = {
        name: Proc(name, {**base, **own.get(name, {})}, ports[name], directory)
        for name in ("store", "provider", "confirm", "runtime", "gateway")
    }
    try:
        await asyncio.gather(*(procs[name].start() for name in ("store", "provider", "confirm")))
        await procs["runtime"].start()
        await procs["gateway"].start()
        yield ProcessStack(procs, secret, dev_token)
    finally:
        for proc in procs.values():
            await proc.close()


@dataclass
class DrainWatch:
    """When a gRPC service said NOT_SERVING (its health Watch stream) and when its port refused a connection."""

    address: str
    not_serving_at: float | None = None
    closed_at: float | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        watching = asyncio.Event()
        self._tasks = [asyncio.create_task(self._health(watching)), asyncio.create_task(self._port())]
        await asyncio.wait_for(watching.wait(), 5)

    async def _health(self, watching: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in stream:
                    watching.set()
                    if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        self.not_serving_at = time.monotonic()
                        break  # an open Watch would hold the server's grace
            stream.cancel()

    async def _port(self) -> None:
        host, port = self.address.rsplit(":", 1)
        while True:
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                self.closed_at = time.monotonic()
                return
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await asyncio.sleep(0.01)

    async def done(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await asyncio.gather(*self._tasks)
