"""Layout rules: a hard cap on the size of hand-written modules, and import boundaries between processes.

CONTRIBUTING.md gives the guidance: aim for 400 lines or fewer, split by concept; 600 is the hard cap checked here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 600  # the hard cap; 400 is guidance (CONTRIBUTING.md)
HAND_WRITTEN_ROOTS = ("libs/steward", "services", "gateway", "cli", "tests", "bench", "examples")


def _hand_written() -> list[Path]:
    paths = [p for root in HAND_WRITTEN_ROOTS for p in (REPO / root).rglob("*.py")]
    return [p for p in paths if "_pb2" not in p.name]


def test_no_hand_written_module_is_over_600_lines() -> None:
    modules = _hand_written()
    assert len(modules) > 30  # the walk still finds the code
    too_long = {str(p.relative_to(REPO)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}


def test_import_boundaries_hold() -> None:
    """import-linter contracts from pyproject.toml: services never import one another, ..."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
