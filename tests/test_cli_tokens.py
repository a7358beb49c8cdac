"""`steward token create|list|revoke` against the in-process gateway over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cli.main import main
from tests.support.stack import Stack

Client = TestClient[Any, Any]


@pytest.fixture
def data_dir(tmp_path: Path, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STEWARD_TOKEN", raising=False)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dev-token").write_text(stack.dev_token + "\n")
    return tmp_path


async def _cli(*argv: str) -> int:
    # urllib blocks: run it off the loop that serves the gateway.
    return await asyncio.to_thread(main, list(argv))


async def test_create_list_and_revoke(
    gateway: Client, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    where = ("--url", str(gateway.make_url("/")), "--data-dir", str(data_dir))
    assert await _cli("token", "create", "--label", "from-cli", "--ttl", "3600", *where) == 0
    lines = capsys.readouterr().out.splitlines()  # the stack's own log lines are there too
    token = next(line.removeprefix("token: ") for line in lines if line.startswith("token: "))
    token_id = next(line.removeprefix("id: ").split()[0] for line in lines if line.startswith("id: "))
    assert token.startswith("stw_")
    response = await gateway.get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200

    assert await _cli("token", "list", *where) == 0
    listed = capsys.readouterr().out
    assert token_id in listed
    assert "from-cli" in listed
    assert token not in listed

    monkeypatch.setenv("STEWARD_TOKEN", token)  # the API token itself may manage its user's tokens
    assert await _cli("token", "revoke", token_id, *where) == 0
    assert token_id in capsys.readouterr().out
    monkeypatch.delenv("STEWARD_TOKEN")
    response = await gateway.get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401

    assert await _cli("token", "revoke", "no-such-token", *where) == 1
    assert "TOKEN_NOT_FOUND" in capsys.readouterr().err


async def test_no_dev_token_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEWARD_TOKEN", raising=False)
    assert await _cli("token", "list", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9") == 1
    assert "dev-token" in capsys.readouterr().err


async def test_create_with_scopes(gateway: Client, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ("--url", str(gateway.make_url("/")), "--data-dir", str(data_dir))
    scoped = ("--scope", "conversations:read", "--scope", "runs:read")
    assert await _cli("token", "create", "--label", "reader", *scoped, *where) == 0
    lines = capsys.readouterr().out.splitlines()
    token = next(line.removeprefix("token: ") for line in lines if line.startswith("token: "))
    assert "scopes: conversations:read runs:read" in lines
    reader = {"Authorization": f"Bearer {token}"}
    assert (await gateway.get("/api/v1/conversations", headers=reader)).status == 200
    assert (await gateway.post("/api/v1/conversations", json={"title": "x"}, headers=reader)).status == 403
    assert await _cli("token", "list", *where) == 0
    assert any("scopes conversations:read,runs:read  reader" in line for line in capsys.readouterr().out.splitlines())
    assert await _cli("token", "create", "--scope", "runs:admin", *where) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
