"""Watching one process of a `ProcessStack` drain: when its readiness probe first said it was not ready, and when it
first answered nothing at all. A drain (ADR 0015) says not ready at once, keeps answering through its pause, then
closes its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from chaos.stack import ProcessStack

__all__ = ["Readiness", "watch_readiness"]

EVERY = 0.02  # seconds between probes
# A draining process answers at once and a closed port refuses at once: a probe that times out is a loaded machine,
# which must not pass for a process gone mid-pause.
PROBE_DEADLINE = 2.0


@dataclass
class Readiness:
    """When the watcher first saw the process not ready, and first saw nothing answer (time.monotonic())."""

    not_ready: float | None = None
    gone: float | None = None

    @property
    def said_first(self) -> bool:
        """It said it was not ready before it stopped answering."""
        return self.not_ready is not None and (self.gone is None or self.not_ready < self.gone)

    @property
    def answered_not_ready(self) -> float | None:
        """Seconds it answered (not ready) before it stopped answering: its drain pause, as seen from outside."""
        if self.not_ready is None or self.gone is None:
            return None
        return self.gone - self.not_ready


@asynccontextmanager
async def watch_readiness(stack: ProcessStack, name: str) -> AsyncIterator[Readiness]:
    """Probe `name`'s readiness every 20 ms from now until it answers nothing (or the block ends)."""
    seen = Readiness()

    async def watch() -> None:
        while seen.gone is None:
            ready = await stack.readiness(name, PROBE_DEADLINE)
            now = time.monotonic()
            if ready is False and seen.not_ready is None:
                seen.not_ready = now
            elif ready is None:
                seen.gone = now
            await asyncio.sleep(EVERY)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
