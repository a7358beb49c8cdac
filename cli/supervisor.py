"""`steward up`: run the five processes on one machine and stop them cleanly.

Children start in their own session, so a terminal's Ctrl-C reaches only the
supervisor, which then stops them in reverse start order (gateway first,
store last) with SIGTERM, waiting for each, and SIGKILL only past a deadline.
If any child dies on its own, the supervisor stops the rest and exits 1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from steward.errors import StewardError
from steward.rpc.client_errors import error_interceptors

# (name, module) in start order.
PROCESSES = (
    ("store", "services.store"),
    ("provider", "services.provider"),
    ("confirm", "services.confirm"),
    ("runtime", "services.runtime"),
    ("gateway", "gateway"),
)
FAKE_LLM = "fake-llm"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# A child's readiness probe: true once the child serves.
ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path | None


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _secret_file(path: Path, nbytes: int) -> str:
    """Read a secret, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(nbytes)
    _write_secret(path, value)
    return value


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def model_line(listing: dict[str, Any] | None, pinned: str, pinned_by: str = "") -> str:
    """The banner's line saying which model the default agent uses and why, from GET /api/v1/model-routes (as the
    dev user sees it) and the route STEWARD_DEFAULT_MODEL_ROUTE pins ("" for the runtime's default, "auto")."""
    route = pinned or "auto"
    why = f"pinned by {pinned_by or 'STEWARD_DEFAULT_MODEL_ROUTE'}={route}" if pinned else "route auto"
    if listing is None:
        return f"model: unknown ({why}; the gateway did not say which model it takes)"
    found = next((r for r in listing["routes"] if r["name"] == route), None)
    if found is None:
        provider, _, model = route.partition("/")
        known = next((p for p in listing["providers"] if p["name"] == provider), None) if model else None
        if known is None:
            return f"model: none ({why} names no route or provider: runs fail MODEL_NOT_FOUND; docs/real-model.md)"
        if not known["available"]:
            return f"model: {route} ({why}; but no {provider} key is configured, so runs fail MODEL_NOT_FOUND)"
        return f"model: {route} ({why})"
    selected = found["selected"]
    if selected is None:
        return f"model: none ({why}: no key for any of its models, so runs fail MODEL_NOT_FOUND)"
    if selected.startswith("demo/"):
        because = why if pinned else "no provider key is configured"
        return f"model: {selected} ({because}; answers are canned, not from a real model: see docs/real-model.md)"
    key = {"instance": "the instance's key", "user": "the dev user's own key"}.get(found["selected_key"] or "")
    detail = "the first provider with a key" if not pinned else ""
    parts = [why, detail, key or "no key needed"]
    return f"model: {selected} ({'; '.join(part for part in parts if part)})"


class Supervisor:
    def __init__(self, data_dir: Path, *, host: str, port: int, verbose: bool, fake_llm: bool = False) -> None:
        self._fake_llm = fake_llm
        self._data_dir = data_dir.resolve()
        self._host = host
        self._port = port
        self._verbose = verbose
        self._children: list[Child] = []
        self._out: IO[str] = sys.stdout

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def _environment(self, addresses: dict[str, str], gateway_port: int) -> dict[str, str]:
        secrets_dir = self._data_dir / "secrets"
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = dict(os.environ)
        env.update(
            {
                "STEWARD_DATA_DIR": str(self._data_dir),
                "STEWARD_INTERNAL_SECRET": _secret_file(secrets_dir / "internal-secret", 48),
                "STEWARD_DEV_TOKEN": self.dev_token,
                "STEWARD_GATEWAY_HOST": self._host,
                "STEWARD_GATEWAY_PORT": str(gateway_port),
                "STEWARD_LOG_JSON": env.get("STEWARD_LOG_JSON", "false"),
                # No load balancer to tell on one machine: a Ctrl-C need not wait out a drain pause per child.
                "STEWARD_DRAIN_PAUSE": env.get("STEWARD_DRAIN_PAUSE", "0"),
                **{f"STEWARD_{name.upper()}_ADDRESS": address for name, address in addresses.items()},
            }
        )
        return env

    def _child_environment(self, name: str, env: dict[str, str]) -> dict[str, str]:
        """Secrets only one process needs go to that process alone."""
        secrets_dir = self._data_dir / "secrets"
        if name == "store":
            return {**env, "STEWARD_TOKEN_PEPPER": _secret_file(secrets_dir / "token-pepper", 48)}
        if name == "provider":
            master = secrets_dir / "master-key"
            if not master.exists():
                _write_secret(master, base64.b64encode(secrets.token_bytes(32)).decode())
            return {**env, "STEWARD_MASTER_KEY_FILE": str(master)}
        if name == "runtime" and "STEWARD_TOOLS_FILE" not in env:
            # The default agent gets the built-in tools and the example notes server (examples/notes_mcp).
            return {
                **env,
                "STEWARD_TOOLS_FILE": str(self._example_tools()),
                "STEWARD_DEFAULT_AGENT_TOOLS": json.dumps(["time.now", "calc", "notes.*"]),
            }
        return env

    def _example_tools(self) -> Path:
        """A tools config (written once, then the operator's to edit) running the example notes server."""
        path = self._data_dir / "tools.yaml"
        if not path.exists():
            notes = {
                "transport": "stdio",
                "command": sys.executable,
                "args": [
                    "-m",
                    "examples.notes_mcp",
                    "--transport",
                    "stdio",
                    "--data",
                    str(self._data_dir / "notes.db"),
                ],
                "cwd": str(Path(__file__).resolve().parents[1]),
                "trust": "trusted",
            }
            path.write_text(
                "# MCP tool servers for the runtime; see docs/adr/0008-tools.md.\n"
                + json.dumps({"servers": {"notes": notes}}, indent=2)
                + "\n"
            )
        return path

    def _fake_llm_routes(self, port: int) -> Path:
        """A routes file sending the default route to the local fake upstream (no key needed)."""
        routes = {
            "upstreams": {FAKE_LLM: {"protocol": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "keyless": True}},
            "routes": {
                FAKE_LLM: {
                    "description": "the local fake upstream (python -m fakes)",
                    "primary": f"{FAKE_LLM}/fake-model",
                }
            },
        }
        path = self._data_dir / "fake-llm-routes.json"
        path.write_text(json.dumps(routes, indent=2))
        return path

    @property
    def dev_token(self) -> str:
        return _secret_file(self._data_dir / "secrets" / "dev-token", 32)

    async def _spawn(self, name: str, module: str, env: dict[str, str], args: tuple[str, ...] = ()) -> Child:
        log_path = None
        stream: int | IO[bytes] | None = None
        if not self._verbose:
            logs = self._data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            log_path = logs / f"{name}.log"
            stream = log_path.open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, env=env, stdout=stream, stderr=stream, start_new_session=True
        )
        if stream is not None and not isinstance(stream, int):
            stream.close()
        return Child(name, process, log_path)

    async def _wait_ready(self, child: Child, check: ReadyCheck) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}\n{_tail(child.log_path)}")
            if await check():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{child.name} was not ready after {READY_TIMEOUT:.0f}s\n{_tail(child.log_path)}")

    @staticmethod
    def _grpc_check(address: str) -> ReadyCheck:
        async def check() -> bool:
            # A refused connection is what a starting child answers: no warning per probe.
            probe = error_interceptors(expected_failures=True)
            async with grpc.aio.insecure_channel(address, interceptors=probe) as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except StewardError:
                    return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        return check

    @staticmethod
    def _tcp_check(port: int) -> ReadyCheck:
        async def check() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        return check

    @staticmethod
    def _http_check(url: str) -> ReadyCheck:
        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        async def check() -> bool:
            return await asyncio.to_thread(get)

        return check

    async def run(self) -> int:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        addresses = {name: f"127.0.0.1:{_free_port()}" for name, _ in PROCESSES if name != "gateway"}
        gateway_port = self._port or _free_port(self._host)
        env = self._environment(addresses, gateway_port)
        url = f"http://{self._host}:{gateway_port}"
        processes = list(PROCESSES)
        if self._fake_llm:
            fake_port = _free_port()
            processes.insert(0, (FAKE_LLM, "fakes"))
            env["STEWARD_FAKE_LLM_PORT"] = str(fake_port)
            env["STEWARD_ROUTES_FILE"] = str(self._fake_llm_routes(fake_port))
            env["STEWARD_DEFAULT_MODEL_ROUTE"] = FAKE_LLM
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            for name, module in processes:
                args = ("--port", env["STEWARD_FAKE_LLM_PORT"]) if name == FAKE_LLM else ()
                child = await self._spawn(name, module, self._child_environment(name, env), args)
                self._children.append(child)
                if name == FAKE_LLM:
                    check = self._tcp_check(int(env["STEWARD_FAKE_LLM_PORT"]))
                elif name == "gateway":
                    check = self._http_check(f"{url}/readyz")
                else:
                    check = self._grpc_check(addresses[name])
                ready = asyncio.create_task(self._wait_ready(child, check))
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not ready.done():
                    ready.cancel()
                    return await self._shutdown(0)
                ready.result()
        except RuntimeError as exc:
            self._say(f"steward: {exc}")
            return await self._shutdown(1)
        self._banner(url, env)
        exits = {asyncio.create_task(child.process.wait()): child for child in self._children}
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for task, child in exits.items():
            if task in done:
                self._say(
                    f"steward: {child.name} exited unexpectedly ({child.process.returncode})\n{_tail(child.log_path)}"
                )
                return await self._shutdown(1)
        return await self._shutdown(0)

    def _model_routes(self, url: str) -> dict[str, Any] | None:
        """What the gateway says of the model routes, as the dev user sees them; None if it cannot be asked."""
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{url}/api/v1/model-routes", headers={"Authorization": f"Bearer {self.dev_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own loopback URL
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _banner(self, url: str, env: dict[str, str]) -> None:
        pids = " ".join(f"{child.name}={child.process.pid}" for child in self._children)
        self._say(f"Steward is running at {url}")
        self._say(f"dev token: {self.dev_token}")
        pinned = env.get("STEWARD_DEFAULT_MODEL_ROUTE", "")
        self._say(model_line(self._model_routes(url), pinned, "--fake-llm" if self._fake_llm else ""))
        self._say(f"data: {self._data_dir}  logs: {self._data_dir / 'logs'}")
        self._say(f"children: {pids}")
        self._say("Press Ctrl-C to stop.")

    async def _shutdown(self, code: int) -> int:
        """Stop children in reverse start order; a child that fails to stop cleanly makes the exit code 1."""
        for child in reversed(self._children):
            if child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    self._say(f"steward: {child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                    child.process.kill()
                    await child.process.wait()
                    code = 1
                    continue
                if child.process.returncode != 0:
                    self._say(f"steward: {child.name} exited with {child.process.returncode} while stopping")
                    code = 1
        self._say("steward: stopped")
        return code
