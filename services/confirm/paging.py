"""Keyset page tokens: the sort key of the last item returned, opaque to clients.

A page starts strictly after the token's key, so rows inserted or removed while a client pages
(a decision acknowledged between two pages of the sweep, say) never shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from steward.errors import StewardError, invalid_argument

_MAX_TOKEN_LENGTH = 200


def encode(*key: int | str) -> str:
    """A token for the sort key of the last item on a page."""
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str, *types: type) -> tuple[int | str, ...] | None:
    """The sort key in `token` (None for the first page), checked against `types`."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN_LENGTH:
        raise _bad_token()
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise _bad_token() from exc
    if not isinstance(key, list) or len(key) != len(types):
        raise _bad_token()
    for part, kind in zip(key, types, strict=True):
        if type(part) is not kind or (isinstance(part, int) and not 0 <= part < 2**63):
            raise _bad_token()
    return tuple(key)


def micros(value: datetime) -> int:
    """A UTC time as integer microseconds since the epoch (exact, unlike a float)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)
    except (OverflowError, OSError, ValueError) as exc:
        raise _bad_token() from exc


def _bad_token() -> StewardError:
    return invalid_argument("page_token", "page_token is not one this service issued")
