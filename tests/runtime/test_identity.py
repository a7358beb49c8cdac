"""A runtime's replica id survives restarts: kept in its data directory unless set, and never shared by two."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.runtime.identity import FILE_NAME, stable_replica_id


def test_the_id_is_written_once_and_read_back(tmp_path: Path) -> None:
    first = stable_replica_id(tmp_path / "data")
    assert first.startswith("runtime-")
    assert stable_replica_id(tmp_path / "data") == first  # a restart
    assert (tmp_path / "data" / FILE_NAME).read_text().strip() == first
    assert stable_replica_id(tmp_path / "other") != first  # another replica, another data directory
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [FILE_NAME]  # no scratch file left


async def test_first_starts_racing_agree(tmp_path: Path) -> None:
    ids = await asyncio.gather(*(asyncio.to_thread(stable_replica_id, tmp_path) for _ in range(8)))
    assert len(set(ids)) == 1
