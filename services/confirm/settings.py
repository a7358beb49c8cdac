"""Confirm service settings."""

from __future__ import annotations

from typing import Self

from pydantic import field_validator, model_validator

from steward.settings import CommonSettings

DAY_SECONDS = 86_400.0


class ConfirmSettings(CommonSettings):
    """Where the confirm service keeps its data, and how long confirmations and the feed live."""

    # The confirm service's own database; empty means a SQLite file `confirm.db` in the data directory.
    database_url: str = ""
    # Seconds a pending confirmation waits for a decision when CreateConfirmation gives no ttl.
    default_ttl_seconds: float = 15 * 60.0
    # The longest ttl CreateConfirmation accepts, in seconds.
    max_ttl_seconds: float = 7 * DAY_SECONDS
    # Seconds the decision feed keeps an entry; an older WatchDecisions cursor is CURSOR_EXPIRED.
    feed_retention_seconds: float = 7 * DAY_SECONDS
    # Seconds between passes that expire overdue confirmations and trim the feed (0 turns them off).
    sweep_interval: float = 5.0
    # Seconds a WatchDecisions stream waits for a wake-up before it re-reads the feed anyway.
    live_poll_seconds: float = 1.0

    @field_validator("default_ttl_seconds", "max_ttl_seconds", "feed_retention_seconds", "live_poll_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("sweep_interval")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @model_validator(mode="after")
    def _default_within_max(self) -> Self:
        if self.default_ttl_seconds > self.max_ttl_seconds:
            raise ValueError("default_ttl_seconds must not exceed max_ttl_seconds")
        return self

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the confirm service's database."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'confirm.db').resolve()}"
