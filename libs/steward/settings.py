"""Settings shared by every process, read from `STEWARD_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_SECRET_BYTES", "CommonSettings"]

MIN_SECRET_BYTES = 32


class CommonSettings(BaseSettings):
    """What every Steward process needs: where the others are and how to trust them."""

    model_config = SettingsConfigDict(env_prefix="STEWARD_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Directory for embedded state.")
    # Log level of the process (`DEBUG`, `INFO`, `WARNING`, `ERROR`).
    log_level: str = "INFO"
    # Write logs as JSON lines (`false`: human-readable console lines).
    log_json: bool = True
    # Signs and verifies the short-lived internal principal tokens (HS256).
    internal_secret: SecretStr
    # During a key rotation: the previous secret, still accepted (never used to sign).
    internal_secret_previous: SecretStr | None = None
    # host:port of the store service (it listens there; the others call it there).
    store_address: str = "127.0.0.1:50061"
    # host:port of the provider service.
    provider_address: str = "127.0.0.1:50062"
    # host:port of the confirm service.
    confirm_address: str = "127.0.0.1:50063"
    # host:port of the runtime service.
    runtime_address: str = "127.0.0.1:50064"
    # Seconds a stopping process has, from SIGTERM, to drain: its drain pause, then in-flight calls finish.
    shutdown_grace: float = 5.0
    # Seconds (within `shutdown_grace`) a stopping process still serves after it reports not ready (gRPC health
    # NOT_SERVING, the gateway's /readyz 503), so that probes and load balancers stop sending to it before its
    # listener closes (ADR 0015).
    drain_pause: float = Field(default=1.0, ge=0)
    # Seconds a call to another service waits for it to be reachable (a restart) before failing UNAVAILABLE; a
    # service that is down answers that much later (0: fail at once). Health checks never wait.
    reconnect_wait: float = Field(default=5.0, ge=0)

    @field_validator("internal_secret", "internal_secret_previous")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"internal_secret must be at least {MIN_SECRET_BYTES} bytes")
        return value
