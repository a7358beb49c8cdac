"""Agent files (docs/agents.md): a folder applied at start, applied again (nothing changes), edited (the version goes
up), a run recording the version it started with, invalid files applying nothing, and an agent's tools over HTTP.

The folder is applied by a second in-process gateway on the session stack, started with `agents_dir`; it applies as
the dev user, whom the session gateway's dev token also is.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes.agent_files import APPLY_TASK, parse_file
from steward.errors import Reason
from tests.support.gateway_http import answer
from tests.support.sse import SseEvent, parse_sse, read_sse
from tests.support.stack import Stack

Client = TestClient[Any, Any]

RESEARCHER = """\
name: {name}
description: Looks things up and does sums.
model_route: demo
system_prompt: |
  You are careful.
  Answer in one paragraph.
tools: [calc, time.now]
approval_policy:
  mode: interactive
  always_confirm_tools: [calc]
limits: {{max_steps: 4, timeout_seconds: 60}}
model_params: {{temperature: 0.2, max_output_tokens: 800, reasoning_effort: low, prompt_caching: true}}
"""
PAIR = """\
name: {first}
model_route: demo
---
name: {second}
description: the second document of the file
model_route: demo
tools: ["*"]
---
"""


async def _apply_folder(stack: Stack, folder: Path) -> list[dict[str, Any]]:
    """Start a gateway that applies `folder` at start; what it applied."""
    app = create_app(stack.gateway_settings(agents_dir=str(folder)))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)):
        results = await app[APPLY_TASK]
    assert results is not None
    return results


async def test_a_folder_applied_twice_changes_nothing_and_an_edit_bumps_the_version(
    stack: Stack, gateway: Client, auth: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {"researcher": f"researcher-{tag}", "first": f"first-{tag}", "second": f"second-{tag}"}
    (tmp_path / "researcher.yaml").write_text(RESEARCHER.format(name=names["researcher"]))
    (tmp_path / "pair.yml").write_text(PAIR.format(**names))
    (tmp_path / "notes.txt").write_text("not an agent file")

    first = await _apply_folder(stack, tmp_path)
    assert [(r["file"], r["document"], r["result"], r["agent"]["version"]) for r in first] == [
        ("pair.yml", 0, "created", 1),
        ("pair.yml", 1, "created", 1),
        ("researcher.yaml", 0, "created", 1),
    ]
    researcher = first[2]["agent"]
    assert researcher["system_prompt"] == "You are careful.\nAnswer in one paragraph.\n"
    assert researcher["approval_policy"]["always_confirm_tools"] == ["calc"]
    assert researcher["model_params"] == {
        "temperature": 0.2,
        "max_output_tokens": 800,
        "reasoning_effort": "low",
        "prompt_caching": True,
    }
    read = await answer(await gateway.get(f"/api/v1/agents/{researcher['id']}", headers=auth), 200)
    assert read == researcher  # the dev user owns the folder's agents

    again = await _apply_folder(stack, tmp_path)
    assert [(r["result"], r["agent"]["version"]) for r in again] == [("unchanged", 1)] * 3
    assert again[2]["agent"]["update_time"] == researcher["update_time"]

    (tmp_path / "researcher.yaml").write_text(RESEARCHER.format(name=names["researcher"]).replace("0.2", "0.7"))
    edited = await _apply_folder(stack, tmp_path)
    outcomes = [(r["result"], r["agent"]["version"]) for r in edited]
    assert outcomes == [("unchanged", 1), ("unchanged", 1), ("updated", 2)]
    assert edited[2]["agent"]["model_params"]["temperature"] == 0.7
    assert edited[2]["agent"]["id"] == researcher["id"]

    # The same files over HTTP, as the caller: nothing changes.
    files = [
        {"name": "pair.yml", "content": PAIR.format(**names)},
        {"name": "researcher.yaml", "content": RESEARCHER.format(name=names["researcher"]).replace("0.2", "0.7")},
    ]
    over_http = await answer(await gateway.post("/api/v1/agents/apply", json={"files": files}, headers=auth), 200)
    assert [(r["result"], r["agent"]["version"]) for r in over_http["agents"]] == [
        ("unchanged", 1),
        ("unchanged", 1),
        ("unchanged", 2),
    ]

    # A run records the version it ran.
    body = {"content": "Hi", "agent_id": researcher["id"], "conversation_id": await _conversation(gateway, auth)}
    created = await answer(await gateway.post("/api/v1/runs", json=body, headers=auth), 202)
    events = await read_sse(gateway, created["events_url"], auth)
    assert events[-1].event == "run_completed"
    started = json.loads(events[0].data)
    assert (started["type"], int(started["data"]["agent_version"])) == ("run_started", 2)
    run = await answer(await gateway.get(f"/api/v1/runs/{created['run']['id']}", headers=auth), 200)
    assert run["agent_version"] == 2


async def test_a_run_keeps_the_version_it_started_with_when_its_agent_changes_mid_run(
    gateway: Client, auth: dict[str, str]
) -> None:
    agent = {"name": f"weather-{uuid.uuid4().hex[:8]}", "model_route": "demo"}
    applied = await answer(await gateway.post("/api/v1/agents/apply", json={"agents": [agent]}, headers=auth), 200)
    (result,) = applied["agents"]
    assert (result["file"], result["result"], result["agent"]["version"]) == ("agents[0]", "created", 1)
    agent_id = result["agent"]["id"]
    weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = {
        "conversation_id": await _conversation(gateway, auth),
        "content": "What is get_weather in Zürich?",
        "agent_id": agent_id,
        "client_tools": [weather],
    }
    created = await answer(await gateway.post("/api/v1/runs", json=body, headers=auth), 202)
    run_path = f"/api/v1/runs/{created['run']['id']}"
    events = await _events_until(gateway, created["events_url"], auth, "run_paused")
    (requested,) = [json.loads(e.data)["data"] for e in events if e.event == "client_tool_requested"]

    changed = {**agent, "description": "changed while a run waits"}
    updated = await answer(await gateway.post("/api/v1/agents/apply", json={"agents": [changed]}, headers=auth), 200)
    assert (updated["agents"][0]["result"], updated["agents"][0]["agent"]["version"]) == ("updated", 2)

    results = {"results": [{"tool_call_id": requested["tool_call_id"], "content": "Sunny"}]}
    await answer(await gateway.post(f"{run_path}/tool_results", json=results, headers=auth), 200)
    rest = await read_sse(gateway, created["events_url"], {**auth, "Last-Event-ID": events[-1].id})
    assert rest[-1].event == "run_completed"
    (resumed,) = [json.loads(e.data)["data"] for e in rest if e.event == "run_resumed"]
    assert int(resumed["agent_version"]) == 2  # the resume went on with the agent as it is now
    run = await answer(await gateway.get(run_path, headers=auth), 200)
    assert run["agent_version"] == 1  # the run still says which version it started with


async def test_invalid_files_apply_nothing_and_name_each_file_and_field(gateway: Client, auth: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    good = f"name: good-{tag}\nmodel_route: demo\n"
    files = [
        {"name": "good.yaml", "content": good},
        {"name": "broken.yaml", "content": "name: [unclosed\n"},
        {"name": "hot.yaml", "content": f"name: hot-{tag}\nmodel_route: demo\nmodel_params: {{temperature: 5}}\n"},
        {"name": "routeless.yaml", "content": f"name: routeless-{tag}\n"},
        {"name": "list.yaml", "content": "- name: a\n"},
        {"name": "twice.yaml", "content": good},
        {"name": "alias.yaml", "content": f"name: alias-{tag}\nmodel_route: &r demo\ndescription: *r\n"},
    ]
    response = await gateway.post("/api/v1/agents/apply", json={"files": files}, headers=auth)
    problem = await answer(response, 400)
    assert problem["reason"] == Reason.AGENT_FILE_INVALID
    found = {(e["file"], e["document"], e["field"], e["reason"]) for e in problem["errors"]}
    assert found == {
        ("broken.yaml", None, None, Reason.AGENT_FILE_INVALID),
        ("hot.yaml", 0, "model_params.temperature", Reason.INVALID_ARGUMENT),
        ("routeless.yaml", 0, "model_route", Reason.INVALID_ARGUMENT),
        ("list.yaml", 0, None, Reason.AGENT_FILE_INVALID),
        ("twice.yaml", 0, "name", Reason.INVALID_ARGUMENT),
        ("alias.yaml", None, None, Reason.AGENT_FILE_INVALID),
    }
    # What only the store checks (the name's pattern) is reported the same way, and also applies nothing.
    caps = "name: Caps\nmodel_route: demo\n"
    bad_name = [{"name": "good.yaml", "content": good}, {"name": "caps.yaml", "content": caps}]
    problem = await answer(await gateway.post("/api/v1/agents/apply", json={"files": bad_name}, headers=auth), 400)
    assert [(e["file"], e["document"], e["field"]) for e in problem["errors"]] == [("caps.yaml", 0, "name")]
    # A model route the provider does not know is refused as at creation, and applies nothing.
    typo = f"name: typo-{tag}\nmodel_route: opneai/gpt-4o-mini\n"
    bad_route = [{"name": "good.yaml", "content": good}, {"name": "typo.yaml", "content": typo}]
    problem = await answer(await gateway.post("/api/v1/agents/apply", json={"files": bad_route}, headers=auth), 400)
    assert [(e["file"], e["field"], e["reason"]) for e in problem["errors"]] == [
        ("typo.yaml", "model_route", Reason.MODEL_NOT_FOUND)
    ]
    listed = await answer(await gateway.get("/api/v1/agents?page_size=500", headers=auth), 200)
    assert f"good-{tag}" not in {agent["name"] for agent in listed["agents"]}

    dry = {"files": [{"name": "good.yaml", "content": good}], "validate_only": True}
    checked = await answer(await gateway.post("/api/v1/agents/apply", json=dry, headers=auth), 200)
    assert (checked["validate_only"], checked["agents"][0]["result"], checked["agents"][0]["agent"]["id"]) == (
        True,
        "created",
        "",
    )
    listed = await answer(await gateway.get("/api/v1/agents?page_size=500", headers=auth), 200)
    assert f"good-{tag}" not in {agent["name"] for agent in listed["agents"]}


async def test_an_agents_tools_show_their_classification_and_why(gateway: Client, auth: dict[str, str]) -> None:
    agent = {
        "name": f"tools-{uuid.uuid4().hex[:8]}",
        "model_route": "demo",
        "tools": ["calc", "time.now"],
        "approval_policy": {"always_confirm_tools": ["calc"]},
    }
    agent_id = (await answer(await gateway.post("/api/v1/agents", json=agent, headers=auth), 201))["id"]
    listed = await answer(await gateway.get(f"/api/v1/agents/{agent_id}/tools", headers=auth), 200)
    shown = {t["name"]: (t["kind"], t["needs_confirmation"], t["reason"], t["server"]) for t in listed["tools"]}
    assert shown == {
        "calc": ("write", True, "always_confirm", None),  # the agent's policy makes the read-only built-in a write
        "time.now": ("read", False, "read_only", None),
    }
    calc = next(tool for tool in listed["tools"] if tool["name"] == "calc")
    assert "always_confirm_tools" in calc["explanation"]
    assert calc["input_schema"]["type"] == "object"

    default = await answer(await gateway.get("/api/v1/agents/steward/tools", headers=auth), 200)
    assert {(t["name"], t["reason"]) for t in default["tools"]} == {("calc", "read_only"), ("time.now", "read_only")}
    catalogue = await answer(await gateway.get("/api/v1/tools", headers=auth), 200)
    assert {"calc", "time.now"} <= {tool["name"] for tool in catalogue["tools"]}
    assert catalogue["servers"] == []  # the session stack has no tools file
    unknown = await gateway.get(f"/api/v1/agents/{uuid.uuid4()}/tools", headers=auth)
    assert (await answer(unknown, 404))["reason"] == Reason.AGENT_NOT_FOUND


def test_the_documented_example_is_a_valid_agent_file() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    documents, errors = parse_file("researcher.yaml", example)
    assert errors == []
    (document,) = documents
    assert set(document.body) == {
        "name",
        "description",
        "model_route",
        "system_prompt",
        "tools",
        "approval_policy",
        "limits",
        "model_params",
    }  # every field of an agent, so the example stays complete


async def _conversation(gateway: Client, auth: dict[str, str]) -> str:
    conversation_id: str = (await answer(await gateway.post("/api/v1/conversations", json={}, headers=auth), 201))["id"]
    return conversation_id


async def _events_until(gateway: Client, path: str, headers: dict[str, str], kind: str) -> list[SseEvent]:
    """Follow an SSE stream until an event of `kind` arrives (a paused run's stream stays open)."""
    async with asyncio.timeout(20):
        response = await gateway.get(path, headers=headers)
        text = ""
        try:
            async for line in response.content:
                text += line.decode()
                events = parse_sse(text)
                if events and events[-1].event == kind:
                    return events
        finally:
            response.close()
    raise AssertionError(f"the stream ended before a {kind} event: {text}")
