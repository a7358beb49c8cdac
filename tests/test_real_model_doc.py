"""docs/real-model.md works as written: its OpenAI block, then its "Try it" block run by bash with curl, against an
in-process stack whose "openai" upstream is the fake OpenAI server (the one stand-in: a routes file pointing the
vendor's name at the fake). Also the demo model's first tool call: `calc 2+3*4` is 14 through the whole loop."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cli import keys as cli_keys
from fakes.upstream import FakeUpstream
from gateway.app import create_app
from services.provider.settings import ProviderSettings
from steward.errors import Reason
from tests.support.gateway_http import answer, refusal
from tests.support.stack import Stack, running_stack, store_user_token

DOC = Path(__file__).resolve().parents[1] / "docs" / "real-model.md"
Client = TestClient[web.Request, web.Application]


async def test_the_demo_models_calc_is_14_through_the_whole_loop(gateway: Client, auth: dict[str, str]) -> None:
    body: dict[str, Any] = {"model": "steward", "messages": [{"role": "user", "content": "calc 2+3*4"}]}
    completion = await answer(await gateway.post("/v1/chat/completions", json=body, headers=auth), 200)
    text = completion["choices"][0]["message"]["content"]
    assert text.startswith("This is Steward's offline demo model. The tools returned a result: 14"), text


def _block(heading: str) -> str:
    """The first bash block under `## heading`."""
    found = re.search(rf"^## {re.escape(heading)}\n.*?```bash\n(.*?)```", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert found, heading
    return found.group(1)


def _setup(block: str) -> dict[str, str]:
    """The variables a setup block exports; its only other line must be `make run` (the stack this test starts)."""
    exported = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words == ["make", "run"] or not words:
            continue
        assert words[0] == "export", line
        name, _, value = words[1].partition("=")
        exported[name] = value
    return exported


def _documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


async def test_the_openai_block_then_the_try_it_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeUpstream()
    await fake.start()
    routes = tmp_path / "openai-is-the-fake.json"
    routes.write_text(json.dumps({"upstreams": {"openai": {"protocol": "openai", "base_url": fake.openai_base_url}}}))
    for name, value in {**_setup(_block("OpenAI")), "STEWARD_ROUTES_FILE": str(routes)}.items():
        monkeypatch.setenv(name, value)
    from_env = ProviderSettings(internal_secret="x" * 32)  # the provider's settings as its environment gives them
    provider = {name: getattr(from_env, name) for name in from_env.model_fields_set - {"internal_secret"}}
    (tmp_path / "data" / "secrets").mkdir(parents=True)  # what `make run` makes, and the stack's data
    assert provider["openai_api_key"].get_secret_value() == "sk-..."
    try:
        async with (
            running_stack(tmp_path / "data", provider=provider) as stack,
            TestClient(TestServer(create_app(stack.gateway_settings()), host="127.0.0.1", port=0)) as gateway,
        ):
            await _try_it(stack, gateway, fake, tmp_path)
            await _instance_keys(stack, gateway)
    finally:
        await fake.stop()


async def _try_it(stack: Stack, gateway: Client, fake: FakeUpstream, cwd: Path) -> None:
    (cwd / "data" / "secrets" / "dev-token").write_text(stack.dev_token + "\n")
    script = _block("Try it").replace("http://127.0.0.1:8080", str(gateway.make_url("")).rstrip("/"))
    bash = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=cwd, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await bash.communicate()
    assert bash.returncode == 0
    routes, default, agent, run, typo = _documents(out.decode())
    auto = next(route for route in routes["routes"] if route["name"] == "auto")
    assert (auto["selected"], auto["selected_key"]) == ("openai/gpt-4o-mini", "instance")
    for completion in (default, run):
        assert completion["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert agent["model_route"] == "openai/gpt-4o-mini"
    assert [request.body["model"] for request in fake.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert all(request.headers["authorization"] == "Bearer sk-..." for request in fake.requests)
    assert typo["reason"] == Reason.MODEL_NOT_FOUND
    assert "auto, demo" in typo["detail"]


async def _instance_keys(stack: Stack, gateway: Client) -> None:
    """The instance key from $OPENAI_API_KEY is listed (never shown); the CLI rotates it; others may not."""
    dev = {"Authorization": f"Bearer {stack.dev_token}"}
    (key,) = (await answer(await gateway.get("/api/v1/admin/keys", headers=dev), 200))["keys"]
    assert (key["provider"], key["label"], key["scope"]) == ("openai", "from $OPENAI_API_KEY", "instance")
    out = io.StringIO()
    args = Namespace(
        action="set", provider="openai", label="rotated", from_env=None, url=str(gateway.make_url("")), data_dir=None
    )
    stack_token = {"STEWARD_TOKEN": stack.dev_token}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack_token.items():
            patch.setenv(name, value)
        code = await asyncio.to_thread(cli_keys.run, args, out, io.StringIO("sk-rotated-000000001234\n"))
    assert code == 0
    assert "sk-rotated" not in out.getvalue()
    (rotated,) = (await answer(await gateway.get("/api/v1/admin/keys", headers=dev), 200))["keys"]
    assert (rotated["id"], rotated["last4"], rotated["label"]) == (key["id"], "1234", "rotated")
    other = {"Authorization": f"Bearer {await store_user_token(stack)}"}
    response = await gateway.get("/api/v1/admin/keys", headers=other)
    assert await refusal(response, 403) == Reason.PERMISSION_DENIED
