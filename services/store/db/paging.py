"""Offset page tokens: one helper for every list (see ADR 0005 for their known limits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def page(
    session: AsyncSession, query: Select[Any], offset: int, limit: int, convert: Callable[[Any], T]
) -> tuple[list[T], str]:
    """Rows `offset`..`offset+limit` of an ordered query, converted, and the next page token ("" at the end)."""
    rows = (await session.scalars(query.offset(offset).limit(limit + 1))).all()
    next_token = str(offset + limit) if len(rows) > limit else ""
    return [convert(row) for row in rows[:limit]], next_token
