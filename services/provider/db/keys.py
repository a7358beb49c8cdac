"""The embedded key store's rows: provider keys as ciphertext, at most one per (owner, provider).

Encryption is the key store's: an upsert and a rotation hand in the function that seals a
secret for a row (its AAD names the row's owner, provider and id, so it runs inside the
transaction, once the row's id is known). Reads take a deferred BEGIN on SQLite, so readers do not
queue behind writers. Database errors propagate as SQLAlchemy's; the key store maps them.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.models import ProviderKeyRow
from steward import timeutil
from steward.db import READ_ONLY


@dataclass(frozen=True)
class Sealed:
    """A secret as stored: AES-GCM ciphertext and its nonce, and the id of the master key that sealed it."""

    master_key_id: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRecord:
    """A stored key's row: its metadata and its sealed secret."""

    id: str
    owner_id: str
    provider: str
    label: str
    last4: str
    create_time: datetime
    update_time: datetime
    sealed: Sealed


# Seals the secret being stored for the row (owner_id, provider, key id).
Seal = Callable[[str, str, str], Sealed]
# Seals a stored key's secret again (under the current master key).
Reseal = Callable[[KeyRecord], Sealed]


def _record(row: ProviderKeyRow) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        owner_id=row.owner_id,
        provider=row.provider,
        label=row.label,
        last4=row.last4,
        create_time=timeutil.aware(row.create_time),
        update_time=timeutil.aware(row.update_time),
        sealed=Sealed(row.master_key_id, row.nonce, row.ciphertext),
    )


def _seal_into(row: ProviderKeyRow, sealed: Sealed) -> None:
    row.ciphertext = sealed.ciphertext
    row.nonce = sealed.nonce
    row.master_key_id = sealed.master_key_id


class KeyRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def upsert(self, owner_id: str, provider: str, label: str, last4: str, seal: Seal) -> KeyRecord:
        """Store the (owner, provider) key, replacing the existing row's label and secret but keeping its id.

        Two first upserts of one (owner, provider) that race raise IntegrityError (Postgres).
        """
        now = timeutil.now()
        async with self._write() as session:
            query = (
                select(ProviderKeyRow)
                .where(ProviderKeyRow.owner_id == owner_id, ProviderKeyRow.provider == provider)
                .with_for_update()
            )
            row = (await session.execute(query)).scalar_one_or_none()
            if row is None:
                row = ProviderKeyRow(id=str(uuid.uuid4()), owner_id=owner_id, provider=provider, create_time=now)
                session.add(row)
            row.label = label
            row.last4 = last4
            row.update_time = now
            _seal_into(row, seal(row.owner_id, row.provider, row.id))
            record = _record(row)
        return record

    async def delete(self, owner_id: str, key_id: str) -> bool:
        """Delete the owner's key `key_id`; whether there was one."""
        async with self._write() as session:
            result = await session.execute(
                delete(ProviderKeyRow).where(ProviderKeyRow.owner_id == owner_id, ProviderKeyRow.id == key_id)
            )
            deleted = getattr(result, "rowcount", 0)
        return bool(deleted)

    async def list(self, owner_id: str) -> builtins.list[KeyRecord]:
        """The owner's keys, by provider."""
        query = select(ProviderKeyRow).where(ProviderKeyRow.owner_id == owner_id).order_by(ProviderKeyRow.provider)
        async with self._read() as session:
            return [_record(row) for row in (await session.execute(query)).scalars().all()]

    async def find(self, owner_id: str, provider: str) -> KeyRecord | None:
        """The owner's key for `provider`, if any."""
        query = select(ProviderKeyRow).where(ProviderKeyRow.owner_id == owner_id, ProviderKeyRow.provider == provider)
        async with self._read() as session:
            row = (await session.execute(query)).scalar_one_or_none()
            return None if row is None else _record(row)

    async def reseal_all(self, master_key_id: str, reseal: Reseal) -> int:
        """Seal again every key not sealed under `master_key_id`, in one transaction; how many."""
        async with self._write() as session:
            query = select(ProviderKeyRow).where(ProviderKeyRow.master_key_id != master_key_id).with_for_update()
            rows = (await session.execute(query)).scalars().all()
            for row in rows:
                _seal_into(row, reseal(_record(row)))
            count = len(rows)
        return count

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            # A deferred BEGIN on SQLite: readers do not queue behind writers.
            await session.connection(execution_options={READ_ONLY: True})
            try:
                yield session
            finally:
                await session.rollback()
