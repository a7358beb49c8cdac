"""A private Postgres cluster for a scenario that crashes the database itself: `initdb` in a temporary directory,
`pg_ctl start` on a free loopback port (fsync on, as in production), `pg_ctl stop -m immediate` (a crash: no
checkpoint, recovery from the WAL at the next start) and `start` again on the same port and data.

Postgres refuses to run as root: when this process is root, every Postgres command runs as the `postgres` user,
which owns the directory. The directory is made with `tempfile` (under /tmp, not under the scenario's data
directory, which that user may not be able to reach).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

__all__ = ["PostgresCluster", "PostgresMissingError", "bin_dir", "postgres_cluster"]

DATABASE = "steward"
START_TIMEOUT = 60


class PostgresMissingError(RuntimeError):
    """No Postgres server binaries (initdb, pg_ctl) on this machine, or no user to run them as."""


def bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, or the newest /usr/lib/postgresql/*/bin; None if none."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    def __init__(self, root: Path, binaries: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._bin = binaries
        self._as_root = os.geteuid() == 0
        self._user = pwd.getpwnam("postgres") if self._as_root else None

    @property
    def dsn(self) -> str:
        """The created database, for asyncpg."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def url(self) -> str:
        """The created database, for SQLAlchemy (what the services are given)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    async def _run(self, *args: str) -> None:
        """A Postgres command, as the `postgres` user when this process is root; its output goes to the log."""
        with (self.root / "commands.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                str(self._bin / args[0]),
                *args[1:],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": str(self.root)},
                start_new_session=True,  # the postmaster outlives pg_ctl: it must not share the caller's signals
            )
            code = await asyncio.wait_for(process.wait(), START_TIMEOUT + 10)
        if code != 0:
            raise RuntimeError(f"{args[0]} exited with {code}:\n{self.log_tail()}")

    async def init(self) -> None:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        await self.start()
        connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await connection.close()

    async def start(self) -> None:
        """Start the server (again) and wait until it accepts connections (after crash recovery, if any)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
        await self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data), "-l",
                        str(self.root / "postgres.log"), "-o", options)  # fmt: skip

    async def stop_immediate(self) -> None:
        """A crash: every server process quits at once, no checkpoint; the next start recovers from the WAL."""
        await self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    async def stop(self) -> None:
        await self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("commands.log", "postgres.log"):
            path = self.root / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


@asynccontextmanager
async def postgres_cluster() -> AsyncIterator[PostgresCluster]:
    """A new cluster, running, with an empty database `steward`; stopped and removed afterwards.
    PostgresMissingError when this machine cannot run one."""
    binaries = bin_dir()
    if binaries is None or not (binaries / "pg_ctl").exists():
        raise PostgresMissingError("initdb and pg_ctl are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissingError("running as root and there is no postgres user to run Postgres as") from None
    root = Path(tempfile.mkdtemp(prefix="steward-chaos-pg-"))
    cluster = PostgresCluster(root, binaries)
    try:
        await cluster.init()
        yield cluster
    finally:
        if cluster.running():
            with contextlib.suppress(Exception):
                await cluster.stop_immediate()
        shutil.rmtree(root, ignore_errors=True)
