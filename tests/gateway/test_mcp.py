"""The MCP endpoint through the MCP SDK's own client, in both protocol revisions, against a gateway on a real
loopback port and the real in-process services (the offline demo model calls the tool a message names, and
the example notes server's writes wait for a confirmation).

Assertions are on structure, ids, states and reasons, not on the demo model's prose. Sessions (their binding to
a user, the cap per user, the manager's lifetime) are in tests/gateway/test_mcp_sessions.py; a restarted step in
tests/gateway/test_step_restart_readers.py.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx2
import mcp_types as types
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from mcp.client.auth.utils import extract_resource_metadata_from_www_auth
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.exceptions import MCPError

from gateway.app import create_app
from gateway.auth import scopes
from gateway.mcp.metadata import MCP_SCOPE, document
from tests.support.mcp_client import (
    ACCEPT,
    AGENT,
    INITIALIZE,
    LEGACY,
    MODERN,
    MODES,
    Mcp,
    mcp_client,
    notes_stack,
    ok,
    refused,
    serving,
)
from tests.support.stack import Stack

TOOLS = {"list_agents", "chat", "list_pending_confirmations", "decide_confirmation", "get_run"}
MODERN_LIST = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/list",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
STATUS = "[Steward:"  # how Steward's own progress messages begin (the others are the agent's text)


@pytest.fixture(scope="module")
async def mcp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mcp]:
    directory: Path = tmp_path_factory.mktemp("mcp")
    async with notes_stack(directory) as running:
        yield running


@pytest.mark.parametrize("mode", MODES)
async def test_both_revisions_list_the_tools_with_schemas_and_annotations(mcp: Mcp, mode: str) -> None:
    async with mcp_client(mcp.url, mcp.token, mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == LEGACY else MODERN)
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema.get("additionalProperties") is False, tool.name
        assert tool.description
        assert tool.annotations is not None
    assert tools["chat"].input_schema["required"] == ["message"]
    assert set(tools["decide_confirmation"].input_schema["required"]) == {"confirmation_id", "outcome"}
    readers = {name for name, tool in tools.items() if tool.annotations and tool.annotations.read_only_hint}
    assert readers == {"list_agents", "list_pending_confirmations", "get_run"}
    decide = tools["decide_confirmation"].annotations
    assert decide is not None
    assert decide.destructive_hint is True
    chat = tools["chat"].annotations
    assert chat is not None
    assert (chat.read_only_hint, chat.destructive_hint) == (False, False)


@pytest.mark.parametrize("mode", MODES)
async def test_chat_answers_streams_progress_and_continues_the_conversation(mcp: Mcp, mode: str) -> None:
    notes: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, message or ""))

    async with mcp_client(mcp.url, mcp.token, mode) as client:
        if mode == LEGACY:
            assert client.server_info is not None
            assert client.server_info.version == importlib.metadata.version("steward")
        agents = ok(await client.call_tool("list_agents", {}))
        assert AGENT in [agent["name"] for agent in agents["agents"]]
        result = await client.call_tool("chat", {"message": "Hello"}, progress_callback=on_progress)
        first = ok(result)
        assert (first["state"], first["pending_confirmations"], first["still_running"]) == ("completed", [], False)
        assert first["answer"]
        again = ok(await client.call_tool("chat", {"message": "Again", "conversation_id": first["conversation_id"]}))
        run = ok(await client.call_tool("get_run", {"run_id": again["run_id"]}))
    # The first notification names the run and its conversation; then the agent's text, all of it, as it came.
    (_, opening), *rest = notes
    assert all(part in opening for part in (first["run_id"], first["conversation_id"], "get_run"))
    assert "".join(message for _, message in rest if not message.startswith(STATUS)) == first["answer"]
    assert all(message for _, message in notes)  # no empty notification
    values = [value for value, _ in notes]
    assert values == sorted(set(values))  # strictly increasing
    # The answer travels once in the content: as text, not again inside the JSON block beside it.
    text, rest_json = result.content
    assert isinstance(text, types.TextContent)
    assert isinstance(rest_json, types.TextContent)
    assert text.text == first["answer"]
    assert "answer" not in json.loads(rest_json.text)
    assert json.loads(rest_json.text)["run_id"] == first["run_id"]
    assert again["conversation_id"] == first["conversation_id"]
    assert again["run_id"] != first["run_id"]
    assert (run["state"], run["run"]["id"], run["answer"]) == ("completed", again["run_id"], again["answer"])
    messages = await mcp.get(f"/api/v1/conversations/{first['conversation_id']}/messages")
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant", "user", "assistant"]


async def test_tool_calls_are_progress_while_the_run_goes(mcp: Mcp) -> None:
    notes: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message or "")

    async with mcp_client(mcp.url, mcp.token, MODERN) as client:
        arguments = {"agent": AGENT, "message": "please list_notes"}
        ok(await client.call_tool("chat", arguments, progress_callback=on_progress))
    activity = [note for note in notes if note.startswith(STATUS) and "notes.list_notes" in note]
    assert activity == ["[Steward: tool `notes.list_notes` started.]", "[Steward: tool `notes.list_notes` finished.]"]


async def test_a_retried_chat_with_its_request_id_starts_no_second_run(mcp: Mcp) -> None:
    key = f"retry-{time.monotonic_ns()}"
    async with mcp_client(mcp.url, mcp.token, MODERN) as client:
        first = ok(await client.call_tool("chat", {"message": "Hello", "request_id": key}))
        second = ok(await client.call_tool("chat", {"message": "Hello", "request_id": key}))
        assert refused(await client.call_tool("chat", {"message": "Hi", "request_id": "has space"})) == (
            "INVALID_ARGUMENT"
        )
    assert (second["run_id"], second["conversation_id"]) == (first["run_id"], first["conversation_id"])
    assert second["answer"] == first["answer"]
    runs = await mcp.get("/api/v1/runs", conversation_id=first["conversation_id"])
    assert [r["id"] for r in runs["runs"]] == [first["run_id"]]
    messages = await mcp.get(f"/api/v1/conversations/{first['conversation_id']}/messages")
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant"]


async def test_a_cancelled_run_is_an_error_result(mcp: Mcp) -> None:
    key = f"cancel-{time.monotonic_ns()}"
    async with mcp_client(mcp.url, mcp.token, MODERN) as client:
        paused = ok(await client.call_tool("chat", {"agent": AGENT, "message": "create_note Later", "request_id": key}))
        await mcp.post(f"/api/v1/runs/{paused['run_id']}/cancel")
        result = await client.call_tool("chat", {"agent": AGENT, "message": "create_note Later", "request_id": key})
    assert result.is_error
    assert isinstance(result.structured_content, dict)
    assert (result.structured_content["run_id"], result.structured_content["state"]) == (paused["run_id"], "cancelled")


async def test_the_default_agent_named_in_another_agents_conversation_is_refused(mcp: Mcp) -> None:
    async with mcp_client(mcp.url, mcp.token, MODERN) as client:
        first = ok(await client.call_tool("chat", {"agent": AGENT, "message": "Hello"}))
        conversation = first["conversation_id"]
        default = await client.call_tool("chat", {"agent": "steward", "message": "Hi", "conversation_id": conversation})
        implicit = ok(await client.call_tool("chat", {"message": "Hi", "conversation_id": conversation}))
        own = ok(await client.call_tool("chat", {"agent": "steward", "message": "Hello"}))
        again = ok(
            await client.call_tool(
                "chat", {"agent": "steward", "message": "Hi", "conversation_id": own["conversation_id"]}
            )
        )
    assert refused(default) == "INVALID_ARGUMENT"
    assert isinstance(default.structured_content, dict)
    assert default.structured_content["error"]["metadata"] == {"field": "agent"}
    assert first["agent_id"] is not None
    assert implicit["agent_id"] == first["agent_id"]  # no agent named: the conversation's
    assert (own["agent_id"], again["agent_id"]) == (None, None)  # the default agent's own conversation goes on
    runs = await mcp.get("/api/v1/runs", conversation_id=conversation)
    assert len(runs["runs"]) == 2  # the refused call started nothing


async def test_a_long_run_is_answered_still_running_with_its_ids_and_goes_on(tmp_path: Path, mcp: Mcp) -> None:
    notes: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message or "")

    async with (
        serving(mcp.stack.gateway_settings(mcp_wait_seconds=0.001)) as (_runner, base),
        mcp_client(f"{base}/mcp", mcp.token, MODERN) as client,
    ):
        result = await client.call_tool("chat", {"message": "Hello"}, progress_callback=on_progress)
        waiting = ok(result)
        assert (waiting["still_running"], waiting["state"]) in {(True, "running"), (True, "queued")}
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        assert all(part in text.text for part in (waiting["run_id"], waiting["conversation_id"], "get_run"))
        assert waiting["run_id"] in notes[0]
        deadline = time.monotonic() + 20
        while (run := ok(await client.call_tool("get_run", {"run_id": waiting["run_id"]})))["state"] != "completed":
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
    assert run["answer"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_write_waits_for_a_decision_made_over_mcp(mcp: Mcp, mode: str) -> None:
    async with mcp_client(mcp.url, mcp.token, mode) as client:
        paused = ok(await client.call_tool("chat", {"agent": AGENT, "message": "create_note Groceries"}))
        assert (paused["state"], paused["pause_reason"]) == ("paused", "awaiting_confirmation")
        (pending,) = paused["pending_confirmations"]
        assert pending["tool_name"] == "notes.create_note"
        assert pending["preview"]["content"]
        assert pending["decide_with"]["arguments"]["confirmation_id"] == pending["id"]
        text = (await client.call_tool("chat", {"agent": AGENT, "message": "create_note Other"})).content[0]
        assert "decide_confirmation" in getattr(text, "text", "")
        listed = ok(await client.call_tool("list_pending_confirmations", {"run_id": paused["run_id"]}))
        assert [c["id"] for c in listed["confirmations"]] == [pending["id"]]

        done = ok(
            await client.call_tool("decide_confirmation", {"confirmation_id": pending["id"], "outcome": "approve"})
        )
        assert (done["run_id"], done["state"], done["pending_confirmations"]) == (paused["run_id"], "completed", [])
        assert done["answer"]
        assert done["confirmation"]["state"] == "approved"
        refusal = await client.call_tool(
            "decide_confirmation", {"confirmation_id": pending["id"], "outcome": "reject", "reason": "changed my mind"}
        )
        assert refused(refusal) == "CONFIRMATION_ALREADY_DECIDED"
    confirmation = await mcp.get(f"/api/v1/confirmations/{pending['id']}")
    assert (confirmation["state"], confirmation["decision"]["surface"]) == ("approved", "mcp")
    assert confirmation["decision"]["decided_by"] == mcp.stack.gateway_settings().dev_user_id


async def test_a_rejection_over_mcp_records_the_reason_and_the_run_goes_on(mcp: Mcp) -> None:
    async with mcp_client(mcp.url, mcp.token, MODERN) as client:
        paused = ok(await client.call_tool("chat", {"agent": AGENT, "message": "create_note Secret"}))
        (pending,) = paused["pending_confirmations"]
        args = {"confirmation_id": pending["id"], "outcome": "reject", "reason": "not now", "wait_for_run": False}
        recorded = ok(await client.call_tool("decide_confirmation", args))
        assert recorded["confirmation"]["decision"]["reason"] == "not now"
        deadline = time.monotonic() + 20
        while (run := ok(await client.call_tool("get_run", {"run_id": paused["run_id"]})))["state"] != "completed":
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
    assert run["pending_confirmations"] == []
    assert run["answer"]


@pytest.mark.parametrize("mode", MODES)
async def test_failures_the_model_can_fix_are_tool_results_with_is_error(mcp: Mcp, mode: str) -> None:
    async with mcp_client(mcp.url, mcp.token, mode) as client:
        assert refused(await client.call_tool("chat", {"agent": "nobody-by-this-name", "message": "hi"})) == (
            "AGENT_NOT_FOUND"
        )
        assert refused(await client.call_tool("chat", {})) == "INVALID_ARGUMENT"
        assert refused(await client.call_tool("chat", {"message": "hi", "temperature": 1})) == "INVALID_ARGUMENT"
        missing = "00000000-0000-4000-8000-000000000000"
        assert refused(await client.call_tool("get_run", {"run_id": missing})) == "RUN_NOT_FOUND"
        assert refused(await client.call_tool("get_run", {"run_id": "not-an-id"})) in {
            "RUN_NOT_FOUND",
            "INVALID_ARGUMENT",
        }
        decision = {"confirmation_id": missing, "outcome": "approve"}
        assert refused(await client.call_tool("decide_confirmation", decision)) == "CONFIRMATION_NOT_FOUND"
        assert refused(await client.call_tool("decide_confirmation", {**decision, "outcome": "maybe"})) == (
            "INVALID_ARGUMENT"
        )
        assert refused(await client.call_tool("chat", {"message": "hi", "conversation_id": missing})) == (
            "CONVERSATION_NOT_FOUND"
        )
        with pytest.raises(MCPError):  # an unknown tool is the protocol's error, not the tool's
            await client.call_tool("no_such_tool", {})


async def test_mcp_takes_the_gateways_tokens_and_its_401_names_the_resource_metadata(mcp: Mcp) -> None:
    metadata_url = f"{mcp.base}/.well-known/oauth-protected-resource/mcp"
    async with httpx2.AsyncClient() as http:
        missing = await http.post(mcp.url, json=INITIALIZE, headers=ACCEPT)
        bad = await http.post(mcp.url, json=INITIALIZE, headers={**ACCEPT, "Authorization": "Bearer stw_nope"})
        document = await http.get(metadata_url)
        root = await http.get(f"{mcp.base}/.well-known/oauth-protected-resource")
    assert (missing.status_code, bad.status_code) == (401, 401)
    assert missing.headers["WWW-Authenticate"] == f'Bearer realm="steward", resource_metadata="{metadata_url}"'
    assert bad.headers["WWW-Authenticate"].startswith('Bearer realm="steward", error="invalid_token"')
    assert extract_resource_metadata_from_www_auth(missing) == metadata_url  # as the SDK's client reads it
    assert extract_resource_metadata_from_www_auth(bad) == metadata_url
    assert missing.json()["reason"] == "TOKEN_MISSING"
    assert bad.json()["reason"] == "TOKEN_INVALID"
    assert document.status_code == 200
    assert root.status_code == 200
    assert document.json() == {
        "resource": mcp.url,
        "bearer_methods_supported": ["header"],
        "resource_name": "Steward MCP endpoint",
        "scopes_supported": [MCP_SCOPE],
    }
    assert root.json()["resource"] == mcp.base
    assert MCP_SCOPE in scopes.SCOPES
    for mode in MODES:
        statuses: list[int] = []
        # The SDK's client fails its call with INTERNAL_ERROR ("Server returned an error response"), in task groups.
        with pytest.RaisesGroup(
            pytest.RaisesExc(MCPError, check=lambda e: e.error.code == types.INTERNAL_ERROR), flatten_subgroups=True
        ):
            async with mcp_client(mcp.url, "stw_not_a_token", mode, statuses=statuses) as client:
                await client.list_tools()
        assert statuses == [401], mode


def test_with_oidc_the_metadata_names_the_issuer_as_the_sdk_expects(stack: Stack) -> None:
    settings = stack.gateway_settings(
        oidc_issuer="https://id.example.com",
        oidc_audience="steward",
        oidc_jwks_url="https://id.example.com/jwks",
        mcp_public_url="https://steward.example.com",
    )
    request = _request(create_app(settings), host="evil.example:8080")
    body = document(request, "/mcp")
    assert body["resource"] == "https://steward.example.com/mcp"  # the public URL, never the Host given
    parsed = ProtectedResourceMetadata.model_validate(body)
    assert [str(url) for url in parsed.authorization_servers] == ["https://id.example.com"]


def _request(app: web.Application, host: str) -> web.Request:
    return make_mocked_request("GET", "/.well-known/oauth-protected-resource/mcp", headers={"Host": host}, app=app)


@pytest.mark.parametrize("version", [None, MODERN])
async def test_a_foreign_host_is_421_and_a_foreign_origin_403(mcp: Mcp, version: str | None) -> None:
    headers = {**ACCEPT, "Authorization": f"Bearer {mcp.token}"}
    if version:
        headers |= {"MCP-Protocol-Version": version, "Mcp-Method": "tools/list"}
    body = INITIALIZE if version is None else MODERN_LIST
    port = mcp.base.rpartition(":")[2]
    async with aiohttp.ClientSession() as http:
        foreign_host = await http.post(mcp.url, json=body, headers={**headers, "Host": f"evil.example:{port}"})
        foreign_origin = await http.post(mcp.url, json=body, headers={**headers, "Origin": "http://evil.example"})
        own_origin = await http.post(mcp.url, json=body, headers={**headers, "Origin": f"http://localhost:{port}"})
        assert (foreign_host.status, foreign_origin.status) == (421, 403)
        assert own_origin.status == 200, await own_origin.text()
        for response in (foreign_host, foreign_origin, own_origin):
            response.close()


async def test_an_open_stream_does_not_spin_and_a_stateless_gateway_serves_2025_11_25(mcp: Mcp) -> None:
    async with aiohttp.ClientSession() as http:
        a = {**ACCEPT, "Authorization": f"Bearer {mcp.token}"}
        async with http.post(mcp.url, json=INITIALIZE, headers=a) as opened:
            session = opened.headers["Mcp-Session-Id"]
        stream_headers = {**a, "Accept": "text/event-stream", "Mcp-Session-Id": session}
        stream_headers["MCP-Protocol-Version"] = "2025-11-25"
        async with http.get(mcp.url, headers=stream_headers) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.sleep(1.0)  # an idle stream: the SDK waits on receive(), which must not return at once
            assert time.process_time() - cpu < 0.5 * (time.monotonic() - wall)
            stream.close()  # leave now (the context's exit would wait for the stream's end)
    async with serving(mcp.stack.gateway_settings(mcp_stateless=True)) as (_runner, base):
        async with mcp_client(f"{base}/mcp", mcp.token, LEGACY) as client:
            assert client.protocol_version == "2025-11-25"
            assert ok(await client.call_tool("list_agents", {}))["agents"]
        async with aiohttp.ClientSession() as http:
            headers = {**ACCEPT, "Authorization": f"Bearer {mcp.token}"}
            async with http.post(f"{base}/mcp", json=INITIALIZE, headers=headers) as opened:
                assert opened.status == 200
                assert "Mcp-Session-Id" not in opened.headers
                assert json.loads((await opened.text()).split("data: ", 1)[1].splitlines()[0])["result"]
