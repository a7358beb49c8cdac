"""Scratch Postgres databases for tests and benchmarks (no pytest dependency)."""

from __future__ import annotations

import os
import uuid

import asyncpg

POSTGRES_DSN = os.environ.get("STEWARD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class PostgresUnavailableError(RuntimeError):
    """No Postgres server answered at POSTGRES_DSN."""


async def create_scratch_database(icu_locale: str = "") -> str:
    """Create an empty database (collating by the ICU locale `icu_locale` when given); return its SQLAlchemy
    (asyncpg) URL."""
    try:
        admin = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise PostgresUnavailableError(f"Postgres not reachable at {POSTGRES_DSN}: {exc}") from exc
    name = f"steward_test_{uuid.uuid4().hex[:12]}"
    try:
        if icu_locale:
            quoted = icu_locale.replace("'", "''")
            locale = f"LOCALE_PROVIDER icu ICU_LOCALE '{quoted}' LOCALE 'C.UTF-8' TEMPLATE template0"
            await admin.execute(f'CREATE DATABASE "{name}" {locale}')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def drop_scratch_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
