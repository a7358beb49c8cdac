"""The chaos suite's restart and outage scenarios at PR scale, over the real stack as processes on SQLite: each
kills (or stops) one process under load and starts it again (chaos/scenarios/). `make chaos` runs them at full
scale, on Postgres too, with the SIGTERM variants F1-term and F3-term (F6 drains every service under load here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import PR, Context, run_scenario

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

# Per scenario, a figure that shows it had its whole load under test, and its value.
LOADED = {
    "F1": ("completed", PR.runs),
    "F2": ("completed", PR.runs),
    "F3": ("completed", PR.runs),
    "F4": ("effects", PR.runs),
    "F5": ("completed", PR.runs),
    "F6": ("answer_violations", 0),
}


@pytest.mark.parametrize("name", list(LOADED))
async def test_scenario_passes(name: str, tmp_path: Path) -> None:
    result = await run_scenario(name, Context(tmp_path, PR))
    assert result.passed, result.report()
    figure, value = LOADED[name]
    assert result.figures[figure] == value, result.report()
