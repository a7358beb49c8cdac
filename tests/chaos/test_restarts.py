"""The chaos suite's restart and outage scenarios at PR scale, over the real stack as processes on SQLite: each
kills (or stops) one process under load and starts it again (chaos/scenarios/). `make chaos` runs them at full
scale, on Postgres too, with the rest of the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import PR, Context, run_scenario

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


@pytest.mark.parametrize("name", ["F1", "F1-term", "F2", "F3", "F3-term", "F5"])
async def test_scenario_passes(name: str, tmp_path: Path) -> None:
    result = await run_scenario(name, Context(tmp_path, PR))
    assert result.passed, result.report()
    assert result.figures["runs"] == PR.runs
