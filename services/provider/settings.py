"""Provider service settings."""

from __future__ import annotations

from steward.settings import CommonSettings


class ProviderSettings(CommonSettings):
    """Provider service settings; provider keys never appear here in logs or dumps."""

    # Seconds between the demo model's streamed tokens (0 streams as fast as possible).
    demo_token_interval: float = 0.01
