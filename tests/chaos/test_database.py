"""F7 at PR scale: the scenario's own Postgres cluster crashes (`pg_ctl stop -m immediate`) under streaming runs
and starts again (chaos/scenarios/database.py). Skipped where this machine has no Postgres server binaries."""

from __future__ import annotations

from pathlib import Path

import pytest

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import PR, Context, run_scenario

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


async def test_postgres_crash_restart_passes(tmp_path: Path) -> None:
    result = await run_scenario("F7", Context(tmp_path, PR))
    if "skipped" in result.figures:
        pytest.skip(str(result.figures["skipped"]))
    assert result.passed, result.report()
    assert result.figures["runs"] == PR.runs
    assert result.figures["completed"] == PR.runs
