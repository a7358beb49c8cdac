"""UTC time helpers for the services with a database: the current time, stored times made aware, Timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["aware", "now", "timestamp"]


def now() -> datetime:
    """The current time, aware, in UTC (the only zone ever stored)."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A stored time in UTC: SQLite hands back naive datetimes, and every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of a stored time (None stays None, for optional fields)."""
    if value is None:
        return None
    result = Timestamp()
    result.FromDatetime(aware(value))
    return result
