"""The Vault (or OpenBao) key store: KV v2 secrets, token or AppRole auth with renewal.

Each key is one KV v2 secret at `<mount>/<prefix>/<owner_id>/<provider>` holding
{"id", "label", "secret", "create_time", "update_time"}; writes use check-and-set
(the version read, or 0 to create) and retry once on a conflict. hvac is
synchronous, so every Vault call runs on one dedicated thread, never on the loop.

A background task renews the token at about 2/3 of its TTL; when renewal fails
(or the token reached its max TTL) it logs in again through AppRole, if
configured. A call rejected as forbidden also logs in again once. A sealed,
unreachable or refusing Vault is UNAVAILABLE (SECRETS_BACKEND_UNAVAILABLE):
there is no fallback to any other key source. Logs and errors carry paths and
Vault's own messages, never a secret.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import hvac
import structlog
from hvac import exceptions as vault_errors

from services.provider.keys.base import (
    PROVIDER_PATTERN,
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
from steward import timeutil
from steward.errors import StewardError, internal

log = structlog.get_logger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT = 10.0  # seconds per HTTP request to Vault
MIN_RENEW_DELAY = 1.0
RETRY_DELAY = 5.0  # after a failed renewal or login
_UNAVAILABLE_ERRORS = (
    vault_errors.VaultDown,
    vault_errors.VaultNotInitialized,
    vault_errors.InternalServerError,
    vault_errors.BadGateway,
    vault_errors.RateLimitExceeded,
)
_DENIED_ERRORS = (vault_errors.Forbidden, vault_errors.Unauthorized)
Record = dict[str, Any]


class VaultKeyStore:
    """Provider keys in Vault KV v2. Build it with `await VaultKeyStore.open(settings)`."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._static_token = settings.vault_token.get_secret_value() if settings.vault_token else ""
        self._role_id = settings.vault_role_id
        self._secret_id = settings.vault_secret_id.get_secret_value() if settings.vault_secret_id else ""
        if bool(self._role_id) != bool(self._secret_id):
            raise KeyStoreConfigError("AppRole needs both STEWARD_VAULT_ROLE_ID and STEWARD_VAULT_SECRET_ID")
        if bool(self._static_token) == bool(self._role_id):
            raise KeyStoreConfigError(
                "the Vault key store needs either STEWARD_VAULT_TOKEN or AppRole credentials "
                "(STEWARD_VAULT_ROLE_ID and STEWARD_VAULT_SECRET_ID), not both"
            )
        self._mount = settings.vault_mount.strip("/")
        self._prefix = settings.vault_prefix.strip("/")
        if not self._mount or not self._prefix:
            raise KeyStoreConfigError("STEWARD_VAULT_MOUNT and STEWARD_VAULT_PREFIX must not be empty")
        self._url = settings.vault_url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steward-vault")
        # Built with a placeholder token so hvac never picks one up from VAULT_TOKEN or ~/.vault-token.
        self._client = hvac.Client(url=settings.vault_url, token="", timeout=REQUEST_TIMEOUT)
        self._authenticated = False
        self._ttl = 0.0  # seconds the current token was granted; 0: it never expires
        self._granted_ttl = 0.0  # what a fresh AppRole login grants
        self._renewable = False
        self._renewal: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: ProviderSettings, *, renew_in_background: bool = True) -> VaultKeyStore:
        """Log in and start token renewal. A Vault that is down now only makes calls fail until it is up."""
        store = cls(settings)
        try:
            await store._run(store._authenticate_sync)
        except StewardError as exc:
            log.warning("vault not usable at startup; key calls fail until it is", url=store._url, reason=exc.reason)
        if renew_in_background:
            store._renewal = asyncio.create_task(store._renew_loop(), name="vault-token-renewal")
        return store

    @property
    def uses_approle(self) -> bool:
        return bool(self._role_id)

    # -- KeyStore ---------------------------------------------------------------------------

    async def put(self, owner_id: str, provider: str, label: str, secret: str) -> StoredKey:
        validate_key(owner_id, provider, label, secret)
        return await self._call(lambda: self._put_sync(owner_id, provider, label, secret))

    async def delete(self, owner_id: str, key_id: str) -> None:
        validate_owner(owner_id)
        await self._call(lambda: self._delete_sync(owner_id, key_id))

    async def list(self, owner_id: str) -> builtins.list[StoredKey]:
        validate_owner(owner_id)
        return await self._call(lambda: self._list_sync(owner_id))

    async def secret_for(self, owner_id: str, provider: str) -> str | None:
        validate_owner(owner_id)
        validate_provider(provider)

        def read() -> str | None:
            record = self._read_sync(self._path(owner_id, provider))[1]
            return None if record is None else str(record["secret"])

        return await self._call(read)

    async def renew(self) -> float:
        """Renew the token now (or log in again); return the TTL it holds afterwards (0: no expiry)."""
        return await self._run(self._renew_sync)

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None
        with contextlib.suppress(Exception):
            await self._run(self._client.adapter.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- running on the Vault thread ----------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the Vault thread; Vault and transport failures come back as StewardErrors."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._translated, fn)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self._run(lambda: self._authorized(fn))

    def _translated(self, fn: Callable[[], T]) -> T:
        error: StewardError
        try:
            return fn()
        except StewardError:
            raise
        except _UNAVAILABLE_ERRORS as exc:
            _log_vault_error("vault unavailable", exc)
            error = secrets_unavailable("Vault is sealed or failing")
        except _DENIED_ERRORS as exc:
            _log_vault_error("vault denied access", exc)
            error = secrets_unavailable("Vault denied access")
        except OSError as exc:  # requests' ConnectionError, Timeout, ... are OSErrors
            log.warning("vault unreachable", url=self._url, error=type(exc).__name__)
            error = secrets_unavailable("Vault is unreachable")
        except vault_errors.VaultError as exc:
            _log_vault_error("vault request failed", exc)
            error = internal()
        raise error  # outside the except blocks: no chained Vault exception travels further

    def _authorized(self, fn: Callable[[], T]) -> T:
        """Call `fn` with a valid token: log in first if needed, and once more if Vault rejects the token."""
        if not self._authenticated:
            self._authenticate_sync()
        try:
            return fn()
        except _DENIED_ERRORS:
            if not self.uses_approle:
                raise
            log.info("vault rejected the token; logging in again")
        self._login_sync()
        return fn()

    def _authenticate_sync(self) -> None:
        if self.uses_approle:
            self._login_sync()
            return
        self._client.token = self._static_token
        data = self._client.auth.token.lookup_self()["data"]
        self._ttl = float(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._authenticated = True

    def _login_sync(self) -> None:
        self._authenticated = False
        try:
            auth = self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)["auth"]
        except vault_errors.InvalidRequest as exc:  # a wrong or expired role id / secret id
            _log_vault_error("vault approle login rejected", exc)
            raise secrets_unavailable("Vault AppRole login failed") from None
        self._ttl = self._granted_ttl = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._authenticated = True
        log.info("vault approle login", ttl=self._ttl, renewable=self._renewable)

    def _renew_sync(self) -> float:
        if not self._authenticated:
            self._authenticate_sync()
            return self._ttl
        if self._ttl <= 0:
            return 0.0
        if not self._renewable:
            if self.uses_approle:
                self._login_sync()
            return self._ttl
        try:
            auth = self._client.auth.token.renew_self()["auth"]
        except (vault_errors.VaultError, OSError) as exc:
            if not self.uses_approle:
                raise
            log.warning("vault token renewal failed; logging in again", error=type(exc).__name__)
            self._login_sync()
            return self._ttl
        self._ttl = float(auth.get("lease_duration") or 0)
        if self.uses_approle and self._ttl < self._granted_ttl / 2:
            # Renewal is capped by the token's max TTL: a fresh login is better than a dying token.
            self._login_sync()
        return self._ttl

    # -- KV v2 --------------------------------------------------------------------------------

    def _path(self, owner_id: str, provider: str) -> str:
        return f"{self._prefix}/{owner_id}/{provider}"

    def _read_sync(self, path: str) -> tuple[int, Record | None]:
        """The current version number (0: none yet) and data (None: absent or deleted) at `path`."""
        kv = self._client.secrets.kv.v2
        try:
            response = kv.read_secret_version(path=path, mount_point=self._mount, raise_on_deleted_version=False)
        except vault_errors.InvalidPath:
            return 0, None
        body = response.get("data") or {}
        version = int((body.get("metadata") or {}).get("version") or 0)
        record = body.get("data")
        return version, record if isinstance(record, dict) and record.get("secret") else None

    def _put_sync(self, owner_id: str, provider: str, label: str, secret: str) -> StoredKey:
        path = self._path(owner_id, provider)
        kv = self._client.secrets.kv.v2
        for attempt in range(2):
            version, current = self._read_sync(path)
            now = timeutil.now().isoformat()
            record: Record = {
                "id": str(current["id"]) if current and current.get("id") else str(uuid.uuid4()),
                "label": label,
                "secret": secret,
                "create_time": str(current["create_time"]) if current and current.get("create_time") else now,
                "update_time": now,
            }
            try:
                kv.create_or_update_secret(path=path, secret=record, cas=version, mount_point=self._mount)
            except vault_errors.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                if attempt:
                    log.warning("vault check-and-set conflict persisted", path=path)
                    raise secrets_unavailable("concurrent update of the key; retry") from None
                log.info("vault check-and-set conflict; retrying", path=path)
                continue
            return _stored(owner_id, provider, record)
        raise AssertionError("unreachable")

    def _list_sync(self, owner_id: str) -> builtins.list[StoredKey]:
        try:
            listing = self._client.secrets.kv.v2.list_secrets(
                path=f"{self._prefix}/{owner_id}", mount_point=self._mount
            )
        except vault_errors.InvalidPath:
            return []
        keys = []
        for name in sorted((listing.get("data") or {}).get("keys") or []):
            if not PROVIDER_PATTERN.fullmatch(name):
                continue  # a sub-folder, or something we did not write
            record = self._read_sync(self._path(owner_id, name))[1]
            if record is not None:
                keys.append(_stored(owner_id, name, record))
        return keys

    def _delete_sync(self, owner_id: str, key_id: str) -> None:
        for key in self._list_sync(owner_id):
            if key.id == key_id:
                self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=self._path(owner_id, key.provider), mount_point=self._mount
                )
                return
        raise key_not_found()

    # -- renewal ------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        delay = self._delay_for(self._ttl) if self._authenticated else RETRY_DELAY
        while True:
            if self._authenticated and self._ttl <= 0:
                return  # a token without expiry (e.g. a root or periodic-less service token)
            if self._authenticated and not self._renewable and not self.uses_approle:
                log.warning("vault token is not renewable; it expires", ttl=self._ttl)
                return
            await asyncio.sleep(delay)
            try:
                delay = self._delay_for(await self.renew())
            except StewardError as exc:
                log.warning("vault token renewal and login failed; retrying", reason=exc.reason)
                delay = RETRY_DELAY

    @staticmethod
    def _delay_for(ttl: float) -> float:
        return max(MIN_RENEW_DELAY, ttl * 2 / 3)


def _stored(owner_id: str, provider: str, record: Record) -> StoredKey:
    """Metadata of a KV record; a malformed record is INTERNAL (logged by path, not content)."""
    try:
        return StoredKey(
            id=str(record["id"]),
            owner_id=owner_id,
            provider=provider,
            label=str(record.get("label") or ""),
            last4=last4_of(str(record["secret"])),
            create_time=datetime.fromisoformat(str(record["create_time"])),
            update_time=datetime.fromisoformat(str(record["update_time"])),
        )
    except (KeyError, ValueError):
        log.error("malformed provider key record in vault", owner_id=owner_id, provider=provider)
        raise internal() from None


def _log_vault_error(event: str, exc: vault_errors.VaultError) -> None:
    # Vault's own messages and the request URL; hvac never puts request bodies in them.
    log.warning(event, error=type(exc).__name__, method=exc.method, url=exc.url, errors=exc.errors)
