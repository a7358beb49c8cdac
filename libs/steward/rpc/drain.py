"""A server's drain: the moment a stopping server ends its feeds, and how a feed ends then.

A feed (a stream that follows something without end: a run's events, the decision feed) would hold a stopping
server for its whole grace and then be cut by gRPC. Instead, when the drain begins (`Drain.begin`, after the
server reported NOT_SERVING and paused), every feed ends at once with UNAVAILABLE `SHUTTING_DOWN`: its callers
treat that as "reconnect" (the runtime's classifier: an outage; the gateway: open the stream again after the last
event it sent). Streams that are not feeds (the provider's Generate) and unary calls run on within the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from steward.errors import Reason, StewardError

__all__ = ["Drain", "shutting_down", "until_drained"]

T = TypeVar("T")


def shutting_down() -> StewardError:
    """The status a feed ends with when its server drains: UNAVAILABLE, so that callers reconnect."""
    return StewardError(grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN, "the server is shutting down; reconnect")


class Drain:
    """Set once by a stopping server; feeds watch it."""

    def __init__(self) -> None:
        self._begun = asyncio.Event()

    @property
    def begun(self) -> bool:
        return self._begun.is_set()

    def begin(self) -> None:
        self._begun.set()

    async def wait(self) -> None:
        await self._begun.wait()


async def until_drained(items: AsyncIterator[T], drain: Drain) -> AsyncIterator[T]:
    """`items`, until `drain` begins: then the source is closed and `shutting_down()` is raised.

    Each item is awaited beside the drain, so a feed that waits long for its next item still ends at once."""
    if drain.begun:
        raise shutting_down()
    iterator = aiter(items)
    drained = asyncio.ensure_future(drain.wait())
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({following, drained}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                raise shutting_down()
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        drained.cancel()
        if following is not None and not following.done():
            following.cancel()  # the drain began, or the caller went away: the source's wait ends here
            await asyncio.wait({following})
        if following is not None and following.done() and not following.cancelled():
            following.exception()  # retrieved: an error the source raised while it was stopped is of no interest
        close = getattr(iterator, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
