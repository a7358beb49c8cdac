"""Per-user rate limits at the gateway: a burst, then 429 RATE_LIMITED with Retry-After, one user's limit not
touching another's; and the token bucket itself on a test clock."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.ratelimit import RateLimiter
from tests.support.gateway_http import refusal
from tests.support.stack import Stack, store_user_token


async def test_a_user_past_the_burst_is_told_to_wait_and_others_are_not(stack: Stack) -> None:
    settings = stack.gateway_settings(rate_limit_per_second=0.5, rate_limit_burst=3)
    client: TestClient[Any, Any]
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1", port=0)) as client:
        mine = {"Authorization": f"Bearer {stack.dev_token}"}
        for _ in range(3):
            assert (await client.get("/api/v1/conversations", headers=mine)).status == 200
        limited = await client.get("/api/v1/conversations", headers=mine)
        assert await refusal(limited, 429) == "RATE_LIMITED"
        assert 1 <= int(limited.headers["Retry-After"]) <= 2  # one token comes back every 2 s
        theirs = {"Authorization": f"Bearer {await store_user_token(stack)}"}
        assert (await client.get("/api/v1/conversations", headers=theirs)).status == 200  # a bucket of their own
        assert (await client.get("/healthz")).status == 200  # public paths are not limited
        assert (await client.get("/api/v1/conversations")).status == 401  # nor is a caller who is nobody yet


def test_the_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.admit("u") for _ in range(2)] == [0.0, 0.0]
    assert limiter.admit("u") == 0.5  # half a second until the next token
    now[0] = 0.5
    assert limiter.admit("u") == 0.0
    now[0] = 100.0  # a long pause refills only up to the burst
    assert [limiter.admit("u") for _ in range(3)] == [0.0, 0.0, 0.5]
    assert RateLimiter(per_second=0, burst=1).admit("u") == 0.0  # off


def test_buckets_are_bounded() -> None:
    limiter = RateLimiter(per_second=1.0, burst=1, clock=lambda: 0.0, max_buckets=2)
    for user in ("a", "b", "c"):
        assert limiter.admit(user) == 0.0
    assert limiter.admit("a") == 0.0  # "a" was forgotten (least recently used): it starts with a full bucket
    assert limiter.admit("c") == 1.0
