"""Keyset page tokens for every list: an opaque token holding the last item's sort key, and the SQL after it.

A page starts strictly after the previous page's last sort key, so rows inserted or removed while a
client pages never shift later pages: no row that existed when the read started, and kept its sort
key, is skipped or repeated. (A row whose sort key changes meanwhile, say a conversation that moves to
the top on a new message, can still be missed or read twice.) Every key ends in a unique column (the
row's id, or a key that is unique by itself), so the order is total. A token is urlsafe base64 of JSON
`[kind, key...]`; `kind` names the list and the token's version, so a token of another list (or a
garbage one) is refused with INVALID_ARGUMENT on `page_token`. Times travel as integer microseconds
since the epoch (exact, unlike a float). Tokens are at most MAX_TOKEN_LENGTH characters, as the HTTP
API's `page_token` parameter allows.

Used by the services with a database; the gateway and the runtime never import it (it uses SQLAlchemy).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from steward import timeutil
from steward.errors import StewardError, invalid_argument

__all__ = ["MAX_TOKEN_LENGTH", "KeyPart", "Keyset", "after_key", "decode", "encode", "page_size", "read_page"]

# Long enough for a few ids and names (ids are at most 64 characters, names and days shorter).
MAX_TOKEN_LENGTH = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

KeyPart = int | str | datetime
T = TypeVar("T")


def micros(value: datetime) -> int:
    """A UTC time as integer microseconds since the epoch (SQLite hands back naive UTC times)."""
    delta = timeutil.aware(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The UTC time `value` microseconds after the epoch; a refused token when out of range."""
    try:
        return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)
    except (OverflowError, OSError, ValueError) as exc:
        raise bad_token() from exc


def encode(kind: str, key: Sequence[KeyPart]) -> str:
    """The token for the sort key of the last item on a page of the list `kind`."""
    parts = [micros(part) if isinstance(part, datetime) else part for part in key]
    text = json.dumps([kind, *parts], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(token: str, kind: str, types: Sequence[type]) -> tuple[Any, ...] | None:
    """The sort key in `token` (None for the first page), checked against `kind` and the key's `types`."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise bad_token()
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad_token() from exc
    if not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind:
        raise bad_token()
    key: list[Any] = []
    for part, expected in zip(value[1:], types, strict=True):
        if isinstance(part, int) and type(part) is int and expected in (int, datetime) and 0 <= part < 2**63:
            key.append(from_micros(part) if expected is datetime else part)
        elif type(part) is str and expected is str:
            key.append(part)
        else:
            raise bad_token()
    return tuple(key)


def page_size(value: int, default: int, maximum: int) -> int:
    """A list's page size: `default` for 0 (unset), at most `maximum`; a negative one is INVALID_ARGUMENT."""
    if value < 0:
        raise invalid_argument("page_size", "page_size must not be negative")
    return min(value or default, maximum)


def bad_token() -> StewardError:
    return invalid_argument("page_token", "page_token is not one this service issued")


@dataclass(frozen=True)
class Keyset:
    """One list's order: its sort columns (each ascending or descending; the last one unique) and token kind."""

    kind: str
    columns: Sequence[QueryableAttribute[Any]]
    descending: Sequence[bool]
    types: Sequence[type]

    def order_by(self) -> list[ColumnElement[Any]]:
        return [
            column.desc() if desc else column.asc() for column, desc in zip(self.columns, self.descending, strict=True)
        ]

    def after(self, token: str) -> ColumnElement[bool] | None:
        """The condition for the rows after the token's key in this order; None for the first page."""
        key = decode(token, self.kind, self.types)
        if key is None:
            return None
        return after_key(self.columns, self.descending, key)

    def token(self, key: Sequence[KeyPart]) -> str:
        return encode(self.kind, key)

    def token_after(self, row: Any) -> str:
        """The token for an ORM row of this list: its values of the sort columns (mapped attributes)."""
        return self.token([getattr(row, column.key) for column in self.columns])


def after_key(
    columns: Sequence[ColumnElement[Any] | QueryableAttribute[Any]], descending: Sequence[bool], key: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after `key` in the order of `columns` (spelt out: row values compare ascending only)."""
    condition: ColumnElement[bool] = false()
    # From the last column outwards: (a > x) OR (a = x AND (b > y OR (b = y AND ...))).
    for column, desc, value in reversed(list(zip(columns, descending, key, strict=True))):
        beyond = column < value if desc else column > value
        condition = or_(beyond, and_(column == value, condition))
    return condition


async def read_page(
    session: AsyncSession,
    query: Select[Any],
    keyset: Keyset,
    token: str,
    size: int,
    convert: Callable[[Any], T],
) -> tuple[list[T], str]:
    """One page of the ORM rows of `query` in `keyset`'s order after `token`, converted, and the next token."""
    condition = keyset.after(token)
    if condition is not None:
        query = query.where(condition)
    rows = (await session.scalars(query.order_by(*keyset.order_by()).limit(size + 1))).all()
    page = rows[:size]
    next_token = keyset.token_after(page[-1]) if len(rows) > size and page else ""
    return [convert(row) for row in page], next_token
