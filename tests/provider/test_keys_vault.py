"""The Vault key store against a real OpenBao dev server (started per test, < 1 s each)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import hvac
import pytest
import structlog

from services.provider.db.models import INSTANCE_OWNER
from services.provider.keys import KeyStoreConfigError, create_key_store
from services.provider.keys.vault import VaultKeyStore
from services.provider.settings import ProviderSettings
from steward.errors import StewardError
from tests.provider.openbao import OpenBao, running_openbao

MOUNT = "secret"
PREFIX = "steward/keys"
POLICY = """
path "secret/data/steward/keys/*" { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/steward/keys/*" { capabilities = ["read", "list", "delete"] }
"""


@pytest.fixture
def openbao() -> Iterator[OpenBao]:
    with running_openbao() as server:
        yield server


def root_client(server: OpenBao) -> Any:
    return hvac.Client(url=server.url, token=server.root_token, timeout=5)


def vault_settings(server: OpenBao, tmp_path: Path, **values: Any) -> ProviderSettings:
    base: dict[str, Any] = {
        "internal_secret": "s" * 40,
        "data_dir": tmp_path,
        "key_store": "vault",
        "vault_url": server.url,
        "vault_token": None,
        "vault_role_id": "",
        "vault_secret_id": None,
        "vault_mount": MOUNT,
        "vault_prefix": PREFIX,
    }
    base.update(values)
    return ProviderSettings.model_validate(base)


def approle(server: OpenBao, *, ttl: str = "5s", max_ttl: str = "30s") -> tuple[str, str]:
    """An AppRole limited to the key prefix; returns (role_id, secret_id)."""
    root = root_client(server)
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(name="steward-keys", policy=POLICY)
    root.write(
        "auth/approle/role/steward",
        token_policies="default,steward-keys",
        token_ttl=ttl,
        token_max_ttl=max_ttl,
    )
    role_id = root.read("auth/approle/role/steward/role-id")["data"]["role_id"]
    secret_id = root.write("auth/approle/role/steward/secret-id")["data"]["secret_id"]
    return str(role_id), str(secret_id)


@asynccontextmanager
async def opened(settings: ProviderSettings, *, renew_in_background: bool = True) -> AsyncIterator[VaultKeyStore]:
    store = await VaultKeyStore.open(settings, renew_in_background=renew_in_background)
    try:
        yield store
    finally:
        await store.close()


def canary() -> str:
    return f"sk-canary-{uuid.uuid4()}"


def owner() -> str:
    return f"user-{uuid.uuid4().hex}"


async def expect_error(awaitable: object, code: grpc.StatusCode, reason: str) -> StewardError:
    with pytest.raises(StewardError) as caught:
        await awaitable  # type: ignore[misc]
    assert (caught.value.code, caught.value.reason) == (code, reason)
    return caught.value


async def expect_unavailable(awaitable: object) -> None:
    await expect_error(awaitable, grpc.StatusCode.UNAVAILABLE, "SECRETS_BACKEND_UNAVAILABLE")


async def test_token_round_trip(openbao: OpenBao, tmp_path: Path) -> None:
    settings = vault_settings(openbao, tmp_path, vault_token=openbao.root_token)
    store = await create_key_store(settings, None)
    assert isinstance(store, VaultKeyStore)
    try:
        user, first, second = owner(), canary(), canary()
        old = await store.put(user, "openai", "old", first)
        new = await store.put(user, "openai", "new", second)
        await store.put(user, "anthropic", "", canary())
        instance = await store.put(INSTANCE_OWNER, "openai", "shared", canary())
        assert new.id == old.id
        assert new.create_time == old.create_time
        assert (new.label, new.last4, new.owner_id) == ("new", second[-4:], user)
        listed = await store.list(user)
        assert [key.provider for key in listed] == ["anthropic", "openai"]
        assert listed[1] == new
        assert second not in repr(listed)
        assert await store.secret_for(user, "openai") == second
        assert await store.secret_for(user, "mistral") is None
        assert await store.secret_for(owner(), "openai") is None
        assert await store.list(owner()) == []

        raw = root_client(openbao).secrets.kv.v2.read_secret_version(
            path=f"{PREFIX}/{user}/openai", mount_point=MOUNT, raise_on_deleted_version=True
        )["data"]
        assert set(raw["data"]) == {"id", "label", "secret", "create_time", "update_time"}
        assert raw["metadata"]["version"] == 2

        await expect_error(store.delete(owner(), new.id), grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")
        await expect_error(store.delete(INSTANCE_OWNER, new.id), grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")
        await store.delete(user, new.id)
        assert await store.secret_for(user, "openai") is None
        assert [key.provider for key in await store.list(user)] == ["anthropic"]
        await expect_error(store.delete(user, new.id), grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")
        # Re-created after a delete: a new id, written with cas=0 again.
        again = await store.put(user, "openai", "", first)
        assert again.id != new.id
        assert [key.id for key in await store.list(INSTANCE_OWNER)] == [instance.id]
        await expect_error(
            store.put(user, "Bad Provider", "", first), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
        )
    finally:
        await store.close()


async def test_concurrent_puts_from_two_stores(openbao: OpenBao, tmp_path: Path) -> None:
    settings = vault_settings(openbao, tmp_path, vault_token=openbao.root_token)
    user = owner()
    async with opened(settings) as one, opened(settings) as two:
        first = await one.put(user, "openai", "", canary())
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                secret_one, secret_two = canary(), canary()
                results = await asyncio.gather(
                    one.put(user, "openai", "one", secret_one), two.put(user, "openai", "two", secret_two)
                )
                assert {key.id for key in results} == {first.id}
                final = await one.secret_for(user, "openai")
                assert final in {secret_one, secret_two}
                assert (await two.list(user))[0].label == ("one" if final == secret_one else "two")
                assert secret_one not in repr(logs)
                assert secret_two not in repr(logs)
        metadata = root_client(openbao).secrets.kv.v2.read_secret_metadata(
            path=f"{PREFIX}/{user}/openai", mount_point=MOUNT
        )
        assert metadata["data"]["current_version"] == 11  # every write landed, none was lost to a race


async def test_check_and_set_conflict_is_retried(
    openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = vault_settings(openbao, tmp_path, vault_token=openbao.root_token)
    user, mine = owner(), canary()
    path = f"{PREFIX}/{user}/openai"
    async with opened(settings) as store:
        stored = await store.put(user, "openai", "", canary())
        real_read = store._read_sync
        interfered: list[bool] = []

        def read_then_race(read_path: str) -> tuple[int, dict[str, Any] | None]:
            result = real_read(read_path)
            if not interfered:  # another writer lands between our read and our write
                interfered.append(True)
                root_client(openbao).secrets.kv.v2.create_or_update_secret(
                    path=path, secret={**(result[1] or {}), "label": "theirs"}, mount_point=MOUNT
                )
            return result

        monkeypatch.setattr(store, "_read_sync", read_then_race)
        replaced = await store.put(user, "openai", "mine", mine)
        assert interfered
        assert replaced.id == stored.id
        assert (await store.list(user))[0].label == "mine"
        assert await store.secret_for(user, "openai") == mine


async def test_approle_login_renewal_and_relogin(openbao: OpenBao, tmp_path: Path) -> None:
    role_id, secret_id = approle(openbao)
    settings = vault_settings(openbao, tmp_path, vault_role_id=role_id, vault_secret_id=secret_id)
    root = root_client(openbao)
    user, secret = owner(), canary()
    async with opened(settings, renew_in_background=False) as store:
        await store.put(user, "anthropic", "", secret)
        token = store._client.token
        ttl = await store.renew()
        assert 0 < ttl <= 5
        assert store._client.token == token  # renewed, not replaced
        assert root.auth.token.lookup(token)["data"]["last_renewal_time"]

        # The token is revoked behind the store's back: the next call logs in again and succeeds.
        root.auth.token.revoke(token)
        assert await store.secret_for(user, "anthropic") == secret
        assert store._client.token != token

        # Renewal of a revoked token falls back to a fresh login.
        token = store._client.token
        root.auth.token.revoke(token)
        assert 0 < await store.renew() <= 5
        assert store._client.token != token
        assert await store.secret_for(user, "anthropic") == secret

        # The role's policy is all it can do: other paths are refused, as unavailability.
        forbidden = hvac.Client(url=openbao.url, token=store._client.token)
        with pytest.raises(hvac.exceptions.Forbidden):
            forbidden.sys.list_mounted_secrets_engines()


async def test_background_renewal(openbao: OpenBao, tmp_path: Path) -> None:
    role_id, secret_id = approle(openbao, ttl="3s", max_ttl="60s")
    settings = vault_settings(openbao, tmp_path, vault_role_id=role_id, vault_secret_id=secret_id)
    root = root_client(openbao)
    async with opened(settings) as store:
        token = store._client.token
        deadline = time.monotonic() + 6
        renewed = False
        while not renewed and time.monotonic() < deadline:  # bounded polling: renewal is due after ~2 s
            renewed = bool(root.auth.token.lookup(token)["data"].get("last_renewal_time"))
            if not renewed:
                await asyncio.sleep(0.2)
        assert renewed
        assert store._client.token == token
        assert await store.secret_for(owner(), "openai") is None


async def test_bad_credentials_are_unavailable(openbao: OpenBao, tmp_path: Path) -> None:
    role_id, _ = approle(openbao)
    settings = vault_settings(openbao, tmp_path, vault_role_id=role_id, vault_secret_id="not-the-secret-id")
    async with opened(settings, renew_in_background=False) as store:
        await expect_unavailable(store.put(owner(), "openai", "", canary()))
    token_settings = vault_settings(openbao, tmp_path, vault_token="not-a-token")
    async with opened(token_settings, renew_in_background=False) as store:
        await expect_unavailable(store.secret_for(owner(), "openai"))
    # A revoked static token has no re-login to fall back on.
    child = root_client(openbao).auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"]
    async with opened(vault_settings(openbao, tmp_path, vault_token=child), renew_in_background=False) as store:
        await store.put(user := owner(), "openai", "", canary())
        root_client(openbao).auth.token.revoke(child)
        await expect_unavailable(store.secret_for(user, "openai"))


async def test_sealed_server_is_unavailable(openbao: OpenBao, tmp_path: Path) -> None:
    settings = vault_settings(openbao, tmp_path, vault_token=openbao.root_token)
    user, secret = owner(), canary()
    async with opened(settings) as store:
        await store.put(user, "openai", "", canary())
        root_client(openbao).sys.seal()
        with structlog.testing.capture_logs() as logs:
            await expect_unavailable(store.put(user, "openai", "", secret))
            await expect_unavailable(store.secret_for(user, "openai"))
            await expect_unavailable(store.list(user))
        assert logs
        assert secret not in repr(logs)


async def test_stopped_server_is_unavailable(openbao: OpenBao, tmp_path: Path) -> None:
    settings = vault_settings(openbao, tmp_path, vault_token=openbao.root_token)
    user, secret = owner(), canary()
    async with opened(settings) as store:
        await store.put(user, "openai", "", canary())
        openbao.stop()
        with structlog.testing.capture_logs() as logs:
            await expect_unavailable(store.put(user, "openai", "", secret))
            await expect_unavailable(store.secret_for(user, "openai"))
        assert secret not in repr(logs)
    # Starting against a stopped server is not fatal: the calls answer UNAVAILABLE.
    async with opened(settings) as store:
        await expect_unavailable(store.secret_for(user, "openai"))


def test_configuration(tmp_path: Path) -> None:
    server = OpenBao("http://127.0.0.1:1", "unused", None, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(KeyStoreConfigError):
        VaultKeyStore(vault_settings(server, tmp_path))
    with pytest.raises(KeyStoreConfigError):
        VaultKeyStore(vault_settings(server, tmp_path, vault_token="t", vault_role_id="r", vault_secret_id="s"))
    with pytest.raises(KeyStoreConfigError):
        VaultKeyStore(vault_settings(server, tmp_path, vault_role_id="r"))
