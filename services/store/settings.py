"""Store service settings."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from steward.settings import MIN_SECRET_BYTES, CommonSettings


class StoreSettings(CommonSettings):
    """Where the store listens, which database it owns, and its policies."""

    # Empty means a SQLite file `steward.db` in the data directory.
    database_url: str = ""
    # Keys the HMAC of stored API tokens; only the store holds it.
    token_pepper: SecretStr
    # Runs that ended (in any terminal state) longer ago than this have their deltas compacted away.
    retention_days: float = 30.0
    # Seconds between retention passes (0 turns the background pass off).
    retention_interval: float = 3600.0
    # Seconds a live event reader waits for a wake-up before it re-reads the log anyway.
    live_poll_seconds: float = 1.0

    @field_validator("token_pepper")
    @classmethod
    def _pepper_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"token_pepper must be at least {MIN_SECRET_BYTES} bytes")
        return value

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'steward.db').resolve()}"
