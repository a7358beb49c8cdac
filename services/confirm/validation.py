"""Request validation for the confirm service.

Text policy (the same on both backends, as in the store): every plain-text field kept in a
Text or String column refuses U+0000 with INVALID_ARGUMENT, because Postgres cannot store it.
JSON texts are validated as JSON and so never hold a raw U+0000 (JSON escapes it). Oversized
fields are INVALID_ARGUMENT with reason TOO_LARGE.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from steward import canonical
from steward.confirm.v1 import confirmation_pb2
from steward.errors import StewardError, invalid_argument

MAX_ID_LENGTH = 64
MAX_TOOL_CALL_ID_LENGTH = 128
MAX_TOOL_NAME_LENGTH = 256
MAX_REQUEST_ID_LENGTH = 128
MAX_IDEMPOTENCY_KEY_LENGTH = 256
MAX_TITLE_LENGTH = 500
MAX_REASON_LENGTH = 2000
MAX_ARGUMENTS_LENGTH = 256 * 1024
MAX_PREVIEW_LENGTH = 1024 * 1024
MAX_RESULT_LENGTH = 1024 * 1024

NUL = "\x00"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Surfaces a caller may name; SURFACE_SYSTEM is Steward's own.
CALLER_SURFACES = frozenset(
    {
        confirmation_pb2.SURFACE_PWA,
        confirmation_pb2.SURFACE_MCP,
        confirmation_pb2.SURFACE_GRPC,
        confirmation_pb2.SURFACE_API,
    }
)
KNOWN_STATES = frozenset(
    value.number
    for value in confirmation_pb2.ConfirmationState.DESCRIPTOR.values
    if value.number != confirmation_pb2.CONFIRMATION_STATE_UNSPECIFIED
)


def too_large(field: str, limit: int) -> StewardError:
    return StewardError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "TOO_LARGE",
        f"{field} is longer than {limit} characters",
        metadata={"field": field},
    )


def plain_text(value: str, field: str, max_length: int) -> str:
    """A plain-text field of at most `max_length` characters without U+0000."""
    if len(value) > max_length:
        raise invalid_argument(field, f"{field} is longer than {max_length} characters")
    if NUL in value:
        raise invalid_argument(field, f"{field} must not contain U+0000")
    return value


def require_id(value: str, field: str, max_length: int = MAX_ID_LENGTH) -> str:
    """A non-empty id of sane length."""
    if not value:
        raise invalid_argument(field, f"{field} is required")
    return plain_text(value, field, max_length)


def lease_epoch(value: int) -> int:
    """A run lease epoch: claims start at 1."""
    if value < 1:
        raise invalid_argument("lease_epoch", "lease_epoch must be a run lease epoch (1 or more)")
    return value


def json_text(value: str, field: str, max_length: int) -> Any:
    """The parsed value of a strict JSON text (see canonical.py)."""
    if len(value) > max_length:
        raise too_large(field, max_length)
    try:
        return canonical.parse(value)
    except ValueError as exc:
        raise invalid_argument(field, f"{field} is not valid JSON: {exc}") from exc


def json_object(value: str, field: str, max_length: int) -> dict[str, Any]:
    """The parsed value of a strict JSON text that must be an object."""
    parsed = json_text(value, field, max_length)
    if not isinstance(parsed, dict):
        raise invalid_argument(field, f"{field} must be a JSON object")
    return parsed


def sha256_hex(value: str, field: str) -> str:
    """A lowercase hex SHA-256, or empty."""
    if value and not _SHA256_HEX.fullmatch(value):
        raise invalid_argument(field, f"{field} must be a lowercase hex SHA-256")
    return value


def ttl(value: Duration, default: float, maximum: float) -> timedelta:
    """How long a confirmation waits: zero means `default` seconds; above `maximum` is refused."""
    if value.seconds < 0 or value.nanos < 0:
        raise invalid_argument("ttl", "ttl must not be negative")
    if value.seconds == 0 and value.nanos == 0:
        return timedelta(seconds=default)
    result = value.ToTimedelta()
    if result.total_seconds() > maximum:
        raise invalid_argument("ttl", f"ttl must be at most {maximum:g} seconds")
    return result


def states(values: Iterable[int]) -> list[int]:
    """A state filter; empty means PENDING only."""
    result: list[int] = []
    for index, value in enumerate(values):
        if value not in KNOWN_STATES:
            raise invalid_argument(f"states[{index}]", "states must name known confirmation states")
        if value not in result:
            result.append(value)
    return result or [confirmation_pb2.CONFIRMATION_STATE_PENDING]
