"""`steward agents apply|export|tools` against the in-process gateway over real HTTP: a folder applied, applied
again (unchanged), exported and the export applied back unchanged; invalid files named on stderr."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cli.main import main
from tests.support.stack import Stack

Client = TestClient[Any, Any]

AGENT = """\
name: {name}
description: Drafts replies.
model_route: demo
system_prompt: |
  Be kind.
  Be brief.
tools: [calc]
approval_policy: {{mode: autonomous, auto_approved_tools: [calc]}}
limits: {{max_steps: 3}}
model_params: {{temperature: 0.0, reasoning_effort: high}}
"""


@pytest.fixture
def data_dir(tmp_path: Path, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STEWARD_TOKEN", raising=False)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dev-token").write_text(stack.dev_token + "\n")
    return tmp_path


async def _cli(*argv: str) -> int:
    # The client blocks: run it off the loop that serves the gateway.
    return await asyncio.to_thread(main, list(argv))


def _results(out: str) -> list[list[str]]:
    outcomes = ("created", "updated", "unchanged")
    return [line.split()[:3] for line in out.splitlines() if line.split()[:1] and line.split()[0] in outcomes]


async def test_apply_a_folder_twice_then_export_and_apply_the_export(
    gateway: Client, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ("--url", str(gateway.make_url("/")), "--data-dir", str(data_dir))
    name = f"drafter-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "drafter.yaml").write_text(AGENT.format(name=name))

    assert await _cli("agents", "apply", "-f", str(folder), *where) == 0
    assert _results(capsys.readouterr().out) == [["created", name, "v1"]]
    assert await _cli("agents", "apply", "-f", str(folder), *where) == 0
    assert _results(capsys.readouterr().out) == [["unchanged", name, "v1"]]

    exported_file = tmp_path / "exported.yaml"
    assert await _cli("agents", "export", name, "-o", str(exported_file), *where) == 0
    exported = exported_file.read_text()
    assert exported.startswith(f"name: {name}\n")
    assert "system_prompt: |\n  Be kind.\n  Be brief.\n" in exported
    assert "id:" not in exported
    assert "version:" not in exported
    assert await _cli("agents", "apply", "-f", str(exported_file), *where) == 0
    assert _results(capsys.readouterr().out) == [["unchanged", name, "v1"]]  # the export round-trips

    (folder / "drafter.yaml").write_text(AGENT.format(name=name).replace("max_steps: 3", "max_steps: 4"))
    assert await _cli("agents", "apply", "-f", str(folder), *where) == 0
    assert _results(capsys.readouterr().out) == [["updated", name, "v2"]]

    assert await _cli("agents", "tools", name, *where) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("calc ")]
    assert line.split()[1:4] == ["read", "at", "once"]


async def test_invalid_files_are_named_and_nothing_is_applied(
    gateway: Client, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ("--url", str(gateway.make_url("/")), "--data-dir", str(data_dir))
    (tmp_path / "ok.yaml").write_text(f"name: ok-{uuid.uuid4().hex[:8]}\nmodel_route: demo\n")
    (tmp_path / "bad.yaml").write_text("name: bad\nmodel_route: demo\nlimits: {max_steps: -1}\n")
    assert await _cli("agents", "apply", "-f", str(tmp_path), *where) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.yaml'} (document 0): limits.max_steps:" in err
    assert "nothing was applied (AGENT_FILE_INVALID)" in err
    assert await _cli("agents", "export", "no-such-agent", *where) == 1
    assert "no agent named 'no-such-agent'" in capsys.readouterr().err
