"""Reading a list page by page while rows are inserted between the pages, for every service's keyset tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

Page = tuple[list[str], str]


async def read_while_inserting(
    read: Callable[[str], Awaitable[Page]], insert: Callable[[], Awaitable[object]]
) -> list[str]:
    """The ids on every page of a list (`read(token)`: ids and next token), inserting before each later page."""
    seen: list[str] = []
    token = ""
    while True:
        ids, token = await read(token)
        seen.extend(ids)
        if not token:
            return seen
        await insert()


def assert_each_once(seen: list[str], existing: Iterable[str]) -> None:
    """Nothing repeated, and every row that existed when the read started read."""
    assert len(seen) == len(set(seen)), f"repeated: {sorted({i for i in seen if seen.count(i) > 1})}"
    missing = set(existing) - set(seen)
    assert not missing, f"skipped: {sorted(missing)}"
