"""The registry the runtime loop uses: per-agent tool lists, argument validation, calls, typed failures."""

from __future__ import annotations

import io
import urllib.request
import uuid
from pathlib import Path

import pytest

from examples.notes_mcp import read_applied_writes
from services.runtime.tools.classify import AgentPolicy, Reason, RunMode, ToolHints, ToolKind
from services.runtime.tools.config import Trust
from services.runtime.tools.mcp_client import McpClientManager
from services.runtime.tools.model import ToolCallStatus, ToolDefinition
from services.runtime.tools.registry import ToolRegistry
from services.runtime.tools.registry_toolbox import RegistryToolbox
from services.runtime.tools.toolbox import Kind, ToolServerInfo

AUTONOMOUS = AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("notes.*",), always_confirm=("notes.read_note",))


def test_an_agent_sees_only_its_tools_classified_by_its_policy(stdio_manager: McpClientManager) -> None:
    toolset = ToolRegistry(stdio_manager).for_agent(tools=["notes.*", "calc"], policy=AUTONOMOUS)
    offered = {tool.name: tool for tool in toolset.list()}
    assert set(offered) == {
        "calc",
        "notes.create_note",
        "notes.delete_note",
        "notes.list_applied_writes",
        "notes.list_notes",
        "notes.read_note",
        "notes.update_note",
    }
    assert "time.now" not in offered
    summary = {name: (t.kind, t.needs_confirmation, t.idempotent, t.reason) for name, t in offered.items()}
    assert summary["notes.list_notes"] == (ToolKind.READ, False, True, Reason.READ_ONLY)
    assert summary["notes.read_note"] == (ToolKind.WRITE, True, True, Reason.ALWAYS_CONFIRM)
    assert summary["notes.create_note"] == (ToolKind.WRITE, False, False, Reason.AUTO_APPROVED)
    assert summary["notes.delete_note"] == (ToolKind.WRITE, True, True, Reason.WRITE)  # destructive: needs its name
    assert offered["notes.create_note"].input_schema["properties"]["title"]["maxLength"] == 200
    assert toolset.describe("time.now") is None


def test_the_catalogue_classifies_without_a_policy_and_shows_each_server(stdio_manager: McpClientManager) -> None:
    tools, servers = RegistryToolbox(ToolRegistry(stdio_manager)).catalogue()
    by_name = {tool.name: tool for tool in tools}
    assert {"calc", "time.now", "notes.create_note", "notes.list_notes"} <= set(by_name)
    summary = {name: (t.kind, t.needs_confirmation, t.reason, t.server) for name, t in by_name.items()}
    assert summary["notes.list_notes"] == (Kind.READ, False, "read_only", "notes")
    assert summary["notes.create_note"] == (Kind.WRITE, True, "write", "notes")  # no policy lets a write through
    assert summary["calc"] == (Kind.READ, False, "read_only", "")
    notes_tools = sum(1 for tool in tools if tool.server == "notes")
    assert servers == [ToolServerInfo(name="notes", trusted=True, connected=True, tool_count=notes_tools)]


def test_validation_errors_name_every_problem_with_its_location(stdio_manager: McpClientManager) -> None:
    toolset = ToolRegistry(stdio_manager).for_agent(tools=["*"], policy=AgentPolicy())
    assert toolset.validate("notes.create_note", {"title": "fine", "tags": ["a", "b"]}) is None

    error = toolset.validate("notes.create_note", {"title": "", "tags": ["ok", 7], "colour": "red"})
    assert error is not None
    assert error.tool == "notes.create_note"
    assert error.problems == (
        "at /: Additional properties are not allowed ('colour' was unexpected)",
        "at /tags/1: 7 is not of type 'string'",
        "at /title: '' should be non-empty",
    )
    assert error.message.startswith("invalid arguments for notes.create_note: at /: ")

    missing = toolset.validate("notes.read_note", {})
    assert missing is not None
    assert missing.problems == ("at /: 'id' is a required property",)
    not_an_object = toolset.validate("notes.read_note", ["n_000000000000"])
    assert not_an_object is not None
    assert "is not of type 'object'" in not_an_object.problems[0]
    bad_pattern = toolset.validate("notes.read_note", {"id": "../etc"})
    assert bad_pattern is not None
    assert bad_pattern.problems == ("at /id: '../etc' does not match '^n_[0-9a-f]{12}$'",)

    unknown = toolset.validate("notes.drop_database", {})
    assert unknown is not None
    assert unknown.problems == ("no tool of that name is available to this agent",)


def test_at_most_five_problems_are_listed(stdio_manager: McpClientManager) -> None:
    toolset = ToolRegistry(stdio_manager).for_agent(tools=["*"], policy=AgentPolicy())
    arguments = {"id": 1, "title": "", "body": 5, "tags": "x", "delay_seconds": 99, "colour": "red"}
    error = toolset.validate("notes.update_note", arguments)
    assert error is not None
    assert len(error.problems) == 6
    assert error.problems[:5] == (
        "at /: Additional properties are not allowed ('colour' was unexpected)",
        "at /body: 5 is not of type 'string'",
        "at /delay_seconds: 99 is greater than the maximum of 30.0",
        "at /id: 1 is not of type 'string'",
        "at /tags: 'x' is not of type 'array'",
    )
    assert error.problems[5] == "and 1 more"


async def test_invalid_arguments_and_unknown_tools_never_reach_the_server(
    stdio_manager: McpClientManager, module_data: Path
) -> None:
    toolset = ToolRegistry(stdio_manager).for_agent(tools=["notes.*"], policy=AgentPolicy())
    before = read_applied_writes(module_data)
    key = f"reg-{uuid.uuid4()}"

    invalid = await toolset.call("notes.create_note", {"title": ""}, idempotency_key=key, timeout=5)
    assert invalid.status is ToolCallStatus.INVALID_ARGUMENTS
    assert invalid.status.not_run
    assert "at /title: '' should be non-empty" in invalid.text

    not_offered = await toolset.call("calc", {"expression": "1+1"}, idempotency_key=None, timeout=5)
    assert not_offered.status is ToolCallStatus.UNKNOWN_TOOL
    hallucinated = await toolset.call("notes.format_disk", {}, idempotency_key=None, timeout=5)
    assert hallucinated.status is ToolCallStatus.UNKNOWN_TOOL
    assert read_applied_writes(module_data) == before

    valid = await toolset.call("notes.create_note", {"title": "valid"}, idempotency_key=key, timeout=5)
    assert valid.status is ToolCallStatus.OK
    assert [w.idempotency_key for w in read_applied_writes(module_data)][len(before) :] == [key]


async def test_refresh_on_demand_keeps_the_catalogue(stdio_manager: McpClientManager) -> None:
    registry = ToolRegistry(stdio_manager)
    before = set(registry.definitions())
    await registry.refresh()
    await registry.refresh("notes")
    assert set(registry.definitions()) == before
    assert {"calc", "time.now", "notes.list_notes"} <= before
    with pytest.raises(KeyError):
        await registry.refresh("no-such-server")


def test_a_schema_referring_outside_itself_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[object] = []

    def urlopen(*args: object, **kwargs: object) -> io.BytesIO:
        fetched.append(args)
        return io.BytesIO(b"{}")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    schema = {"type": "object", "properties": {"path": {"$ref": "http://127.0.0.1:9/internal/path.json"}}}
    remote = ToolDefinition("far.write", "", schema, ToolHints(), Trust.TRUSTED, "far", "write")
    nested: dict[str, object] = {}
    for _ in range(600):
        nested = {"n": nested}
    deep_schema = {
        "$defs": {"n": {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"}}},
        "$ref": "#/$defs/n",
    }
    deep = ToolDefinition("far.deep", "", deep_schema, ToolHints(), Trust.TRUSTED, "far", "deep")
    registry = ToolRegistry(None, builtins=())
    for definition, arguments in ((remote, {"path": "a"}), (deep, nested)):
        error = registry.validate(definition, arguments)
        assert error is not None
        assert error.problems == ("the arguments cannot be checked against the tool's input schema",)
    assert fetched == []
