"""Provider-key stores: embedded (AES-GCM in the provider database) or Vault (KV v2)."""

from services.provider.keys.base import (
    KeyStore,
    KeyStoreConfigError,
    StoredKey,
    create_key_store,
    secrets_unavailable,
)

__all__ = ["KeyStore", "KeyStoreConfigError", "StoredKey", "create_key_store", "secrets_unavailable"]
