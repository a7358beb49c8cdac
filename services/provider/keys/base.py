"""What every provider-key store implements, shared validation, and the backend factory.

A key store holds LLM provider keys per owner (a user id, or INSTANCE_OWNER for
the instance's keys), at most one per (owner, provider). Keys are write-only:
`put`, `delete` and `list` deal in `StoredKey` metadata (id, provider, label,
last 4 characters, times), and only `secret_for` (internal use by the provider
service's adapters) ever returns a secret. No error, log line or repr made here
carries a secret: validation messages name the rule, never the value.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import grpc

from steward.errors import StewardError, invalid_argument

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from services.provider.settings import ProviderSettings

PROVIDER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_SECRET_BYTES = 8 * 1024
MAX_LABEL_CHARS = 200
MAX_OWNER_CHARS = 128  # ProviderKeyRow.owner_id
# steward.provider.v1.ProviderKey.last4 is empty for secrets shorter than this, so a short
# secret is never shown whole (or mostly) in a listing.
LAST4_MIN_SECRET_CHARS = 12


@dataclass(frozen=True)
class StoredKey:
    """A stored key's metadata: never the secret."""

    id: str
    owner_id: str
    provider: str
    label: str
    last4: str
    create_time: datetime
    update_time: datetime


class KeyStore(Protocol):
    """Provider keys per owner; one key per (owner, provider)."""

    async def put(self, owner_id: str, provider: str, label: str, secret: str) -> StoredKey:
        """Store a key, replacing an existing key of (owner, provider) and keeping its id."""
        ...

    async def delete(self, owner_id: str, key_id: str) -> None:
        """Remove a key; KEY_NOT_FOUND (NOT_FOUND) for an unknown id or another owner's key."""
        ...

    async def list(self, owner_id: str) -> builtins.list[StoredKey]:
        """The owner's keys, ordered by provider."""
        ...

    async def secret_for(self, owner_id: str, provider: str) -> str | None:
        """The owner's secret for `provider`, or None; for the provider service's own calls only."""
        ...

    async def close(self) -> None:
        """Release connections, threads and background tasks."""
        ...


class KeyStoreConfigError(RuntimeError):
    """The key store is misconfigured (missing or malformed master key, Vault credentials, ...)."""


def secrets_unavailable(detail: str) -> StewardError:
    """The key store cannot be used now (sealed, unreachable, access denied): retryable.

    `detail` is a short fixed description chosen by the caller; never pass a secret or
    anything derived from one.
    """
    return StewardError(
        grpc.StatusCode.UNAVAILABLE,
        "SECRETS_BACKEND_UNAVAILABLE",
        f"the provider key store is unavailable: {detail}",
    )


def key_not_found() -> StewardError:
    return StewardError(grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND", "no such provider key")


def last4_of(secret: str) -> str:
    """What a listing may show of a secret: its last 4 characters, or nothing if it is short."""
    return secret[-4:] if len(secret) >= LAST4_MIN_SECRET_CHARS else ""


def validate_owner(owner_id: str) -> None:
    """An owner id is used in database rows and Vault paths: keep it path-safe."""
    if not owner_id or len(owner_id) > MAX_OWNER_CHARS:
        raise invalid_argument("owner_id", f"owner id must be 1 to {MAX_OWNER_CHARS} characters")
    if "/" in owner_id or owner_id in {".", ".."} or not owner_id.isprintable() or owner_id != owner_id.strip():
        raise invalid_argument("owner_id", "owner id contains characters that are not allowed")


def validate_provider(provider: str) -> None:
    if not PROVIDER_PATTERN.fullmatch(provider):
        raise invalid_argument("provider", "provider must match ^[a-z0-9][a-z0-9_-]{0,63}$")


def validate_key(owner_id: str, provider: str, label: str, secret: str) -> None:
    """Check a put's arguments; messages describe the rule and never echo the secret."""
    validate_owner(owner_id)
    validate_provider(provider)
    if len(label) > MAX_LABEL_CHARS:
        raise invalid_argument("label", f"label must be at most {MAX_LABEL_CHARS} characters")
    if "\x00" in label:
        raise invalid_argument("label", "label must not contain U+0000")
    if not secret:
        raise invalid_argument("secret", "secret must not be empty")
    if len(secret.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        raise invalid_argument("secret", f"secret must be at most {MAX_SECRET_BYTES} bytes")
    if "\x00" in secret:
        raise invalid_argument("secret", "secret must not contain U+0000")
    if not secret.isprintable():
        raise invalid_argument("secret", "secret must contain only printable characters")
    if secret != secret.strip():
        raise invalid_argument("secret", "secret must not start or end with whitespace")


async def create_key_store(settings: ProviderSettings, sessions: async_sessionmaker[AsyncSession] | None) -> KeyStore:
    """The configured key store (`settings.key_store`), ready to use.

    Embedded needs `sessions` (the provider database; its tables must exist). Vault logs
    in (token or AppRole) and starts token renewal; an unreachable or sealed Vault at
    startup is not fatal: calls answer SECRETS_BACKEND_UNAVAILABLE until it is back.
    Raises KeyStoreConfigError for a missing or malformed configuration.
    """
    if settings.key_store == "vault":
        from services.provider.keys.vault import VaultKeyStore

        return await VaultKeyStore.open(settings)
    if sessions is None:
        raise KeyStoreConfigError("the embedded key store needs the provider database")
    from services.provider.keys.embedded import EmbeddedKeyStore

    return EmbeddedKeyStore(settings, sessions)
