"""Provider service settings. Secrets are SecretStr: masked in dumps, never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator

from steward.settings import CommonSettings


class ProviderSettings(CommonSettings):
    """Provider service settings."""

    # Seconds between the demo model's streamed tokens (0 streams as fast as possible).
    demo_token_interval: float = 0.01
    # The provider's own database (embedded key store, usage ledger, budgets); empty means
    # a SQLite file `provider.db` in the data directory.
    database_url: str = ""

    # Where provider keys live: "embedded" (AES-GCM ciphertext in the provider's database)
    # or "vault" (KV v2 on a Vault / OpenBao server).
    key_store: Literal["embedded", "vault"] = "embedded"
    # Embedded store: the AES-256 master key, base64 (32 bytes), or a file holding it.
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    # During a master-key rotation: the previous key, still accepted for decryption.
    master_key_previous: SecretStr | None = None

    # Vault store: address, and either a token or AppRole credentials.
    vault_url: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_role_id: str = ""
    vault_secret_id: SecretStr | None = None
    # Vault store: the KV v2 mount that holds the keys.
    vault_mount: str = "secret"
    # Vault store: the path under that mount where the keys live.
    vault_prefix: str = "steward/keys"

    # Seconds an attempt may wait for its first event, and between two events.
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    # Once a call's first content has gone out, events arriving within this many seconds of the last
    # message are merged into the next one (coalesce.py); 0 sends every event as it comes.
    coalesce_window: float = 0.008
    # Attempts per target (the first included), and the backoff base and cap in seconds.
    retry_max_attempts: int = 3
    retry_base_delay: float = 0.25
    retry_max_delay: float = 8.0
    # Consecutive transient failures that open an upstream's circuit, and for how long.
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0

    # Model routes (a JSON file); empty means the built-in upstreams and the demo route only.
    routes_file: Path | None = None
    # Your prices (JSON, US dollars per million tokens, per provider/model), read over the dated table that
    # ships (services/provider/prices.json); marks local models free. Empty means the shipped table alone.
    prices_file: Path | None = None
    # The base URL (with `/v1`) of an OpenAI-compatible server (Ollama, vLLM, llama.cpp): its models are then the
    # routes "openai-compatible/<model>". It takes no key unless one is put for provider "openai-compatible".
    openai_compatible_base_url: str = ""
    # The route "auto" (the built-in default agent's): the first of these models whose provider has a key for the
    # caller (theirs or the instance's), else the offline demo model.
    auto_route_models: list[str] = Field(default_factory=lambda: ["anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"])
    # The vendors' standard variables (no STEWARD_ prefix): at start, each set one is stored as the instance's key
    # for its provider, replacing the instance key there was (so changing the variable rotates the key). Never
    # logged; an instance key put later with `steward keys set` lasts until the next start with the variable set.
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )

    @field_validator("coalesce_window")
    @classmethod
    def _a_short_window(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1 second (tokens would wait that long)")
        return value

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the provider's database."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'provider.db').resolve()}"
