"""Retry policy and per-upstream circuit breakers.

Retries: jittered exponential backoff ("full jitter"), the upstream's
`Retry-After` honoured as a floor, a cap on each wait and on attempts. Only
transient failures before any content was streamed are retried; a stream that
already produced content fails upward as a whole step.

Breaker: after `failure_threshold` consecutive transient failures an upstream
is open (skipped) for `open_seconds`; then one trial call is let through
(half-open): success closes it, failure opens it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # per target, the first try included
    base_delay: float = 0.25
    max_delay: float = 8.0
    # Retry-After values above this are not waited for: the target is given up instead.
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before `attempt` + 1 (attempt counts from 1), or None to give up."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after or 0.0)


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    open_seconds: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic)
    _failures: int = 0
    _opened_at: float | None = None
    _trial_in_flight: bool = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self._opened_at >= self.open_seconds else "open"

    def allow(self) -> bool:
        """May a call go to this upstream now? In half-open state, only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def release(self) -> None:
        """A call ended without saying anything about the upstream's health (cancelled, say):
        free the half-open trial slot so another call may try."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        """A transient failure; terminal ones (bad request, bad key) say nothing about health."""
        self._trial_in_flight = False
        if self._opened_at is not None:
            self._opened_at = self.clock()  # the trial failed: open again
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self.clock()


class Breakers:
    """One breaker per upstream name."""

    def __init__(self, failure_threshold: int = 5, open_seconds: float = 30.0) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._threshold = failure_threshold
        self._open_seconds = open_seconds

    def __getitem__(self, upstream: str) -> CircuitBreaker:
        breaker = self._breakers.get(upstream)
        if breaker is None:
            breaker = self._breakers[upstream] = CircuitBreaker(self._threshold, self._open_seconds)
        return breaker
