"""The store's text policy, the same on every backend.

Postgres cannot store U+0000 in `text` columns while SQLite can; so that a
request means the same thing on both, every plain-text field the store keeps in
a Text or String column refuses U+0000 with INVALID_ARGUMENT before it reaches
the database.
"""

from __future__ import annotations

from collections.abc import Iterable

from steward.errors import invalid_argument

NUL = "\x00"


def no_nul(value: str, field: str) -> str:
    """`value` unchanged; INVALID_ARGUMENT naming `field` when it contains U+0000."""
    if NUL in value:
        raise invalid_argument(field, f"{field} must not contain U+0000")
    return value


def plain_text(value: str, field: str, max_length: int) -> str:
    """A plain-text field of at most `max_length` characters without U+0000."""
    if len(value) > max_length:
        raise invalid_argument(field, f"{field} is longer than {max_length} characters")
    return no_nul(value, field)


def text_list(values: Iterable[str], field: str, *, max_items: int, max_length: int) -> list[str]:
    """A list of non-empty, distinct plain-text entries, each checked like `plain_text`."""
    items = list(values)
    if len(items) > max_items:
        raise invalid_argument(field, f"{field} has more than {max_items} entries")
    seen: set[str] = set()
    for index, item in enumerate(items):
        entry = f"{field}[{index}]"
        if not item:
            raise invalid_argument(entry, f"{entry} must not be empty")
        plain_text(item, entry, max_length)
        if item in seen:
            raise invalid_argument(entry, f"{entry} repeats an earlier entry")
        seen.add(item)
    return items
