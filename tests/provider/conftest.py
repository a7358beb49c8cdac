"""Fixtures for the provider service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fakes import FakeUpstream


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started fake Anthropic + OpenAI upstream on an ephemeral port (stopped after the test)."""
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
