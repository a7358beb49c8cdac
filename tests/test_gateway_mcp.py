"""The MCP endpoint through the MCP SDK's own client, in both protocol revisions, against a gateway on a real
loopback port and the real in-process services (the offline demo model calls the tool a message names, and
the example notes server's writes wait for a confirmation).

Assertions are on structure, ids, states and reasons, not on the demo model's prose.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx2
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from mcp.client.auth.utils import extract_resource_metadata_from_www_auth
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.exceptions import MCPError

from gateway import scopes
from gateway.app import create_app
from gateway.mcp.metadata import MCP_SCOPE, document
from gateway.settings import GatewaySettings
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc
from tests.grpc_helpers import principal_metadata
from tests.mcp_client import LEGACY, MODERN, MODES, mcp_client, ok, refused
from tests.runtime.harness import tools_file
from tests.stack import Stack, running_stack, store_user_token

AGENT = "notes-keeper"
TOOLS = {"list_agents", "chat", "list_pending_confirmations", "decide_confirmation", "get_run"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
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
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Mcp:
    stack: Stack
    base: str
    http: aiohttp.ClientSession  # Steward's HTTP API as the dev user

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def token(self) -> str:
        return self.stack.dev_token

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.base + path, params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def _serve(settings: GatewaySettings) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture(scope="module")
async def mcp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mcp]:
    directory: Path = tmp_path_factory.mktemp("mcp")
    runtime = {"tools_file": str(tools_file(directory, directory / "notes.db")), "sweep_interval": 0.5}
    async with running_stack(directory, runtime=runtime) as stack:
        settings = stack.gateway_settings()
        async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
            agent = agent_pb2.Agent(
                name=AGENT,
                system_prompt="You keep notes.",
                model_route="demo",
                tools=["notes.*"],
                approval_policy=agent_pb2.ApprovalPolicy(mode=agent_pb2.RUN_MODE_INTERACTIVE),
            )
            await store_grpc.AgentServiceStub(channel).CreateAgent(
                store_pb.CreateAgentRequest(agent=agent),
                metadata=principal_metadata(stack.secret, settings.dev_user_id),
            )
        runner, base = await _serve(settings)
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.dev_token}"}) as http:
                yield Mcp(stack, base, http)
        finally:
            await runner.cleanup()


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
    texts: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        texts.append(message or "")

    async with mcp_client(mcp.url, mcp.token, mode) as client:
        agents = ok(await client.call_tool("list_agents", {}))
        assert AGENT in [agent["name"] for agent in agents["agents"]]
        first = ok(await client.call_tool("chat", {"message": "Hello"}, progress_callback=on_progress))
        assert (first["state"], first["pending_confirmations"], first["still_running"]) == ("completed", [], False)
        assert first["answer"]
        assert "".join(texts) == first["answer"]  # streamed as it came, all of it
        again = ok(await client.call_tool("chat", {"message": "Again", "conversation_id": first["conversation_id"]}))
        run = ok(await client.call_tool("get_run", {"run_id": again["run_id"]}))
    assert again["conversation_id"] == first["conversation_id"]
    assert again["run_id"] != first["run_id"]
    assert (run["state"], run["run"]["id"], run["answer"]) == ("completed", again["run_id"], again["answer"])
    messages = await mcp.get(f"/api/v1/conversations/{first['conversation_id']}/messages")
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant", "user", "assistant"]


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
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK client fails in its own way on a 401
        async with mcp_client(mcp.url, "stw_not_a_token"):
            pass


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


async def test_a_session_answers_only_its_own_user(mcp: Mcp) -> None:
    other = await store_user_token(mcp.stack)
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    async with aiohttp.ClientSession() as http:
        a = {**ACCEPT, "Authorization": f"Bearer {mcp.token}"}
        async with http.post(mcp.url, json=INITIALIZE, headers=a) as opened:
            assert opened.status == 200, await opened.text()
            session = opened.headers["Mcp-Session-Id"]
        in_session = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        async with http.post(
            mcp.url, json=listing, headers={**ACCEPT, **in_session, "Authorization": f"Bearer {other}"}
        ) as b:
            assert b.status == 404, await b.text()
            assert "notes" not in await b.text()
        async with http.post(mcp.url, json=listing, headers={**a, **in_session}) as mine:
            assert mine.status == 200
            assert "list_agents" in await mine.text()
        async with http.delete(mcp.url, headers={**a, **in_session}) as closed:
            assert closed.status == 200


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
    settings = mcp.stack.gateway_settings(mcp_stateless=True)
    runner, base = await _serve(settings)
    try:
        async with mcp_client(f"{base}/mcp", mcp.token, LEGACY) as client:
            assert client.protocol_version == "2025-11-25"
            assert ok(await client.call_tool("list_agents", {}))["agents"]
        async with aiohttp.ClientSession() as http:
            headers = {**ACCEPT, "Authorization": f"Bearer {mcp.token}"}
            async with http.post(f"{base}/mcp", json=INITIALIZE, headers=headers) as opened:
                assert opened.status == 200
                assert "Mcp-Session-Id" not in opened.headers
                assert json.loads((await opened.text()).split("data: ", 1)[1].splitlines()[0])["result"]
    finally:
        await runner.cleanup()
