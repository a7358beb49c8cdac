"""Runtime service settings, including the built-in default agent."""

from __future__ import annotations

import uuid

from pydantic import Field

from steward.settings import CommonSettings


class RuntimeSettings(CommonSettings):
    """Runtime settings. Until agents are stored, every run uses the default agent below."""

    replica_id: str = Field(default_factory=lambda: f"runtime-{uuid.uuid4().hex[:12]}")
    lease_seconds: int = 30
    default_model_route: str = "demo"
    default_system_prompt: str = "You are Steward's default agent. Answer helpfully and concisely."
    default_max_output_tokens: int = 1024
    # Text deltas after the first are coalesced into one event per this many seconds.
    text_flush_interval: float = 0.03
