"""Gateway settings."""

from __future__ import annotations

from pydantic import SecretStr

from steward.settings import CommonSettings


class GatewaySettings(CommonSettings):
    """Where the gateway listens and how it authenticates callers."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # The development token (what `make run` prints) authenticates as `dev_user_id`.
    dev_token: SecretStr
    dev_user_id: str = "dev-user"
    # API tokens verified by the store are trusted for this long without asking again (0: always ask);
    # a revoke made through another replica takes effect here within this time.
    token_cache_seconds: float = 30.0
    token_cache_size: int = 10_000
    # Per-user token bucket on each replica: sustained requests per second and burst (0 per second: no limit).
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    max_body_bytes: int = 1024 * 1024
    sse_ping_seconds: float = 15.0
    sse_retry_ms: int = 2000
    # Seconds allowed to unary calls to the services.
    upstream_timeout: float = 10.0
