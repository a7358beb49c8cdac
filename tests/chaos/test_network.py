"""The chaos suite's network scenarios at PR scale, over the real stack as processes on SQLite, with a fault proxy
between the runtime and the store: its replies dropped in short windows (F10), a partition healed (F11)
(chaos/scenarios/network.py). `make chaos` runs them at full scale, on Postgres too, with the rest of the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import PR, Context, run_scenario

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


@pytest.mark.parametrize("name", ["F10", "F11"])
async def test_scenario_passes(name: str, tmp_path: Path) -> None:
    result = await run_scenario(name, Context(tmp_path, PR))
    assert result.passed, result.report()
    assert result.figures["runs"] == PR.runs
