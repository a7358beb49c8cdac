"""The gateway benchmark's stack: two fake upstreams, and store, provider, confirm, runtime and gateway processes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.provider import _free_port, upstream_process
from bench.runtime_stack import _environment, backing_services


@dataclass(frozen=True)
class Upstream:
    """A fake OpenAI-compatible upstream: every call answers `pieces` text pieces `chunk_delay` seconds apart."""

    name: str
    pieces: int
    chunk_delay: float


@dataclass(frozen=True)
class GatewayStack:
    """The running gateway and the upstreams' roots (for direct calls), by upstream name."""

    url: str
    dev_token: str
    roots: dict[str, str]


def _routes(roots: dict[str, str]) -> dict[str, object]:
    """A provider routes file: one keyless upstream and one route per fake, both named after it."""
    return {
        "upstreams": {
            name: {"protocol": "openai", "base_url": f"{root}/v1", "keyless": True} for name, root in roots.items()
        },
        "routes": {name: {"description": f"fake upstream {name}", "primary": f"{name}/fake-model"} for name in roots},
    }


async def _ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode}")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway was not ready after 60 s")


@asynccontextmanager
async def gateway_stack(data_dir: Path, upstreams: list[Upstream]) -> AsyncIterator[GatewayStack]:
    """Every process as deployed (SQLite, logging at WARNING); the gateway with rate limits off (one user drives
    the whole load)."""
    async with AsyncExitStack() as stack:
        roots = {
            upstream.name: await stack.enter_async_context(upstream_process(upstream.pieces, upstream.chunk_delay))
            for upstream in upstreams
        }
        routes_file = data_dir / "bench-routes.json"
        routes_file.write_text(json.dumps(_routes(roots)))
        os.environ["STEWARD_ROUTES_FILE"] = str(routes_file)  # read by the provider process only
        try:
            backing = await stack.enter_async_context(backing_services(data_dir))
        finally:
            del os.environ["STEWARD_ROUTES_FILE"]
        runtime_address, port = f"127.0.0.1:{_free_port()}", _free_port()
        runtime_env = _environment(backing.runtime_settings(runtime_address=runtime_address, tools_file=""))
        dev_token = secrets.token_urlsafe(32)
        gateway_env = _environment(
            {
                "internal_secret": backing.secret,
                "data_dir": data_dir,
                "log_level": "WARNING",
                "dev_token": dev_token,
                "gateway_port": port,
                "rate_limit_per_second": 0,
                "runtime_address": runtime_address,
                **{f"{name}_address": address for name, address in backing.addresses.items()},
            }
        )
        processes = [
            await asyncio.create_subprocess_exec(sys.executable, "-m", "services.runtime", env=runtime_env),
            await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", env=gateway_env),
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            await _ready(url, processes[1])
            yield GatewayStack(url, dev_token, roots)
        finally:
            for process in reversed(processes):
                process.terminate()
                await process.wait()
