"""L4 at PR scale, over the real stack as processes on SQLite: clients that leave after their run's first event,
every run still ends (chaos/scenarios/load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import PR, Context, run_scenario

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


async def test_every_run_ends_when_its_client_leaves_after_the_first_event(tmp_path: Path) -> None:
    result = await run_scenario("L4", Context(tmp_path, PR))
    assert result.passed, result.report()
    assert result.figures["runs"] == PR.abandoned
    assert result.figures["terminal"] == PR.abandoned
