"""Fixtures for the provider service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fakes import FakeUpstream
from tests.provider.adapter_env import Env


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started fake Anthropic + OpenAI upstream on an ephemeral port (stopped after the test)."""
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[Env]:
    """The adapters made during a test, against the fake upstream; closed after it."""
    env = Env(fake_upstream)
    yield env
    for adapter in env.made:
        await adapter.aclose()
