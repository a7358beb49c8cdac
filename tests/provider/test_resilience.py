"""Retry policy, circuit breaker and price table, as pure units."""

from __future__ import annotations

import json
import random
from pathlib import Path

from services.provider.prices import PriceTable
from services.provider.resilience import CircuitBreaker, RetryPolicy
from steward.common.v1 import usage_pb2


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0, max_retry_after=10.0)
    rng = random.Random(7)
    delays = [policy.delay(attempt, None, rng) for attempt in (1, 2, 3)]
    assert all(d is not None and 0 <= d <= cap for d, cap in zip(delays, (1.0, 2.0, 3.0), strict=True))
    assert policy.delay(4, None, rng) is None  # attempts exhausted
    assert policy.delay(1, 5.0, rng) == 5.0  # Retry-After is a floor
    assert policy.delay(1, 11.0, rng) is None  # too long to wait: give the target up


def test_breaker_opens_half_opens_with_one_trial_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10.0, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: open again for a full period
    assert breaker.state == "open"
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_prices_cost_usage_and_bound_the_worst_case(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"a/m": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}}))
    table = PriceTable.load(path)
    price = table.price("a", "m")
    assert price is not None
    usage = usage_pb2.Usage(
        input_tokens=1000, output_tokens=100, cache_read_input_tokens=2000, cache_write_input_tokens=400
    )
    assert price.cost_micros(usage) == 3000 + 1500 + 600 + 1500
    assert price.worst_case_micros(1000 + 2000 + 400, 100) >= price.cost_micros(usage)
    assert table.price("a", "unknown") is None  # unpriced: never a silent $0 (tests/provider/test_prices.py)


def test_a_half_open_trial_that_ends_without_a_verdict_frees_the_slot() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 5.0
    assert breaker.allow()
    breaker.release()  # e.g. the caller was cancelled
    assert breaker.allow()  # another call may try
    breaker.record_success()
    assert breaker.state == "closed"
