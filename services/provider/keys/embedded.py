"""The embedded key store: AES-256-GCM ciphertext in the provider's own database.

Each secret is encrypted under the master key with a fresh 96-bit random nonce and
AAD = "owner_id|provider|key_id|master_key_id", so a ciphertext copied into another
row (another owner, provider or id) or relabelled with another master key id fails
to decrypt. The master key is 32 bytes, base64, from `master_key` or the file
`master_key_file`; its id is the first 16 hex digits of SHA-256 over a fixed prefix
and the key. During a rotation `master_key_previous` is still accepted for
decryption, and `rotate()` re-encrypts every row under the current key.

A decryption failure (tampered row, wrong key) is INTERNAL with a generic message;
the log names the row, never anything of the secret.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.keys import KeyRecord, KeyRepository, Sealed
from services.provider.keys.base import (
    KeyStoreConfigError,
    StoredKey,
    key_not_found,
    last4_of,
    secrets_unavailable,
    validate_key,
    validate_owner,
    validate_provider,
)
from services.provider.settings import ProviderSettings
from steward.errors import internal

log = structlog.get_logger(__name__)

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_PREFIX = b"steward/provider/master-key-id/v1\x00"


@dataclass(frozen=True)
class MasterKey:
    """A master key and its public id; the key bytes stay out of repr."""

    id: str
    aead: AESGCM = field(repr=False)


def generate_master_key() -> str:
    """A fresh master key, base64, as `master_key` / `master_key_file` expect it."""
    return base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode("ascii")


def master_key_id(raw: bytes) -> str:
    return hashlib.sha256(_KEY_ID_PREFIX + raw).hexdigest()[:16]


def parse_master_key(encoded: str, source: str) -> MasterKey:
    """Decode a base64 (standard or URL-safe) 32-byte key; errors name the setting, not the value."""
    text = encoded.strip()
    raw: bytes | None = None
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(text, altchars=altchars, validate=True)
            break
        except (binascii.Error, ValueError):
            continue
    if raw is None:
        raise KeyStoreConfigError(f"{source} is not valid base64")
    if len(raw) != MASTER_KEY_BYTES:
        raise KeyStoreConfigError(f"{source} must decode to {MASTER_KEY_BYTES} bytes (got {len(raw)})")
    return MasterKey(master_key_id(raw), AESGCM(raw))


def load_master_keys(settings: ProviderSettings) -> tuple[MasterKey, MasterKey | None]:
    """The current master key and the previous one (if set), from settings or the key file."""
    if settings.master_key is not None and settings.master_key_file is not None:
        raise KeyStoreConfigError("set only one of STEWARD_MASTER_KEY and STEWARD_MASTER_KEY_FILE")
    if settings.master_key is not None:
        current = parse_master_key(settings.master_key.get_secret_value(), "STEWARD_MASTER_KEY")
    elif settings.master_key_file is not None:
        try:
            text = settings.master_key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII"
            raise KeyStoreConfigError(f"cannot read master key file {settings.master_key_file}: {reason}") from None
        current = parse_master_key(text, f"master key file {settings.master_key_file}")
    else:
        raise KeyStoreConfigError(
            "the embedded key store needs a master key: set STEWARD_MASTER_KEY or STEWARD_MASTER_KEY_FILE "
            "(32 random bytes, base64; `steward up` generates one)"
        )
    previous = None
    if settings.master_key_previous is not None:
        previous = parse_master_key(settings.master_key_previous.get_secret_value(), "STEWARD_MASTER_KEY_PREVIOUS")
        if previous.id == current.id:
            previous = None
    return current, previous


def _aad(owner_id: str, provider: str, key_id: str, key: MasterKey) -> bytes:
    return f"{owner_id}|{provider}|{key_id}|{key.id}".encode()


class EmbeddedKeyStore:
    """Provider keys as AES-GCM ciphertext in the provider_keys table (`db.keys`; tables are created by migrations)."""

    def __init__(self, settings: ProviderSettings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._current, previous = load_master_keys(settings)
        self._keys = {self._current.id: self._current}
        if previous is not None:
            self._keys[previous.id] = previous
        self._rows = KeyRepository(sessions)

    @property
    def master_key_id(self) -> str:
        """The id of the key new ciphertext is written under."""
        return self._current.id

    async def put(self, owner_id: str, provider: str, label: str, secret: str) -> StoredKey:
        validate_key(owner_id, provider, label, secret)
        for attempt in range(2):
            try:
                return await self._upsert(owner_id, provider, label, secret)
            except IntegrityError:
                # Two first puts of one (owner, provider) raced (Postgres): the row exists now.
                if attempt:
                    log.error("provider key upsert conflict", owner_id=owner_id, provider=provider)
                    raise internal() from None
        raise AssertionError("unreachable")

    async def _upsert(self, owner_id: str, provider: str, label: str, secret: str) -> StoredKey:
        def seal(owner_id: str, provider: str, key_id: str) -> Sealed:
            return self._seal(owner_id, provider, key_id, secret)

        async with _database_errors():
            record = await self._rows.upsert(owner_id, provider, label, last4_of(secret), seal)
        return _stored(record)

    async def delete(self, owner_id: str, key_id: str) -> None:
        validate_owner(owner_id)
        async with _database_errors():
            deleted = await self._rows.delete(owner_id, key_id)
        if not deleted:
            raise key_not_found()

    async def list(self, owner_id: str) -> builtins.list[StoredKey]:
        validate_owner(owner_id)
        async with _database_errors():
            return [_stored(record) for record in await self._rows.list(owner_id)]

    async def secret_for(self, owner_id: str, provider: str) -> str | None:
        validate_owner(owner_id)
        validate_provider(provider)
        async with _database_errors():
            record = await self._rows.find(owner_id, provider)
        return None if record is None else self._decrypt(record)

    async def rotate(self) -> int:
        """Re-encrypt every row not under the current master key (fresh nonce); return how many."""

        def reseal(record: KeyRecord) -> Sealed:
            return self._seal(record.owner_id, record.provider, record.id, self._decrypt(record))

        async with _database_errors():
            count = await self._rows.reseal_all(self._current.id, reseal)
        if count:
            log.info("provider keys re-encrypted", count=count, master_key_id=self._current.id)
        return count

    async def close(self) -> None:
        """Nothing to release: the sessions belong to the caller."""

    def _seal(self, owner_id: str, provider: str, key_id: str, secret: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(owner_id, provider, key_id, self._current)
        return Sealed(self._current.id, nonce, self._current.aead.encrypt(nonce, secret.encode("utf-8"), aad))

    def _decrypt(self, record: KeyRecord) -> str:
        sealed = record.sealed
        key = self._keys.get(sealed.master_key_id)
        if key is None:
            log.error(
                "provider key is encrypted under an unknown master key",
                key_id=record.id,
                owner_id=record.owner_id,
                provider=record.provider,
                master_key_id=sealed.master_key_id,
            )
            raise internal()
        try:
            plain = key.aead.decrypt(
                sealed.nonce, sealed.ciphertext, _aad(record.owner_id, record.provider, record.id, key)
            )
        except InvalidTag:
            # Wrong key, or a row that was altered or copied: nothing about the secret is known here.
            log.error(
                "provider key failed to decrypt",
                key_id=record.id,
                owner_id=record.owner_id,
                provider=record.provider,
                master_key_id=sealed.master_key_id,
            )
            raise internal() from None
        return plain.decode("utf-8")


@asynccontextmanager
async def _database_errors() -> AsyncIterator[None]:
    """Database failures as StewardErrors; statement parameters (ciphertext) stay out of logs."""
    try:
        yield
    except IntegrityError:
        raise
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            log.warning("provider key database unavailable", error=type(exc.orig).__name__)
            raise secrets_unavailable("database unavailable") from None
        log.error("provider key database error", error=type(exc.orig).__name__)
        raise internal() from None
    except SQLAlchemyError as exc:
        log.error("provider key database error", error=type(exc).__name__)
        raise internal() from None


def _stored(record: KeyRecord) -> StoredKey:
    return StoredKey(
        id=record.id,
        owner_id=record.owner_id,
        provider=record.provider,
        label=record.label,
        last4=record.last4,
        create_time=record.create_time,
        update_time=record.update_time,
    )
