"""Work a gateway starts beside serving (applying the agent folder, checking agents' routes): a task made once the
app's gRPC clients are up, kept under an app key (so tests can await it), and cancelled when the app stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


def start_beside_serving(
    app: web.Application,
    key: web.AppKey[asyncio.Task[T]],
    work: Callable[[web.Application], Coroutine[Any, Any, T]],
) -> None:
    """Run `work(app)` as a task while the app serves; it never delays serving."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(work(app), name=getattr(work, "__name__", "background"))
        app[key] = task
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(context)
