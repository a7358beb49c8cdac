"""Fresh databases for tests on both backends, with one policy for Postgres:
skipped locally when no server answers, an error on CI (CI=true), where both lanes must run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.pg import PostgresUnavailableError, create_scratch_database, drop_scratch_database

BACKENDS = ["sqlite", "postgres"]


async def fresh_database_url(backend: str, tmp: Path, sqlite_name: str = "steward.db", icu_locale: str = "") -> str:
    """An empty database: a SQLite file under `tmp`, or a scratch Postgres database (collating by the ICU
    locale `icu_locale` when given)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / sqlite_name}"
    try:
        return await create_scratch_database(icu_locale)
    except PostgresUnavailableError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"Postgres is required on CI: {exc}") from exc
        pytest.skip(str(exc))


async def drop_database_url(url: str) -> None:
    """Drop a scratch Postgres database (SQLite files go with their temporary directory)."""
    if url.startswith("postgresql"):
        await drop_scratch_database(url)
