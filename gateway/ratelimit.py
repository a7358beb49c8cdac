"""Per-principal rate limits: a token bucket for each authenticated user, on each gateway replica.

A user may make `rate_limit_burst` requests at once and `rate_limit_per_second` a second over time; beyond
that the answer is 429 RATE_LIMITED with `Retry-After` (whole seconds until a request would be admitted).
A stream counts as one request when it starts. The buckets live in the replica that answers (N replicas
admit up to N times the rate); `rate_limit_per_second` 0 turns limits off. Public paths are not limited.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import problems
from gateway.app_keys import ACCESS, SETTINGS
from gateway.auth.bearer import CALLER, Handler

MAX_BUCKETS = 100_000  # least recently used first out; a forgotten user starts again with a full bucket


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by principal."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        self._rate = per_second
        self._burst = max(1, burst)
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def admit(self, principal: str) -> float:
        """0 when a request of `principal` may go now (and takes a token), else the seconds until one may."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(principal, None) or _Bucket(float(self._burst), now)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        self._buckets[principal] = bucket
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate


LIMITER = web.AppKey("rate_limiter", RateLimiter)


def install(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: limit the caller's requests (429 RATE_LIMITED with Retry-After)."""
    if request.app[ACCESS].is_public(request):
        return await handler(request)
    wait = request.app[LIMITER].admit(request[CALLER].user_id)
    if wait > 0:
        retry_after = str(max(1, math.ceil(wait)))
        raise problems.HttpError(
            429, "RATE_LIMITED", "too many requests; try again later", headers={"Retry-After": retry_after}
        )
    return await handler(request)
