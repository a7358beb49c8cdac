"""The request/response layer both clients share: each API call as a `Call` (what to send, how to read the answer).

The sync and async clients only send a `Call` and hand the answer to `Call.finish`; everything else (paths,
bodies, headers, parsing, errors) is here, once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from steward.client.errors import error_for_status
from steward.client.models import (
    Agent,
    AppliedAgent,
    ClientTool,
    Confirmation,
    Conversation,
    Limits,
    Message,
    Page,
    Run,
    RunStarted,
    Tool,
    ToolCatalog,
    ToolResult,
)

__all__ = [
    "DEFAULT_URL",
    "Call",
    "apply_agents",
    "cancel_run",
    "client_headers",
    "create_conversation",
    "create_run",
    "decide_confirmation",
    "delete_conversation",
    "get_agent",
    "get_confirmation",
    "get_conversation",
    "get_run",
    "list_agent_tools",
    "list_agents",
    "list_confirmations",
    "list_conversations",
    "list_messages",
    "list_runs",
    "list_tools",
    "post_message",
    "resolve",
    "submit_tool_results",
]

T = TypeVar("T")
Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8080"  # what `steward up` serves by default
_API = "/api/v1"


def resolve(base_url: str | None, token: str | None) -> tuple[str, str]:
    """The gateway URL and token: the arguments, else `STEWARD_URL` / `STEWARD_TOKEN`, else the local default and
    no token (the gateway then answers 401 `TOKEN_MISSING`)."""
    url = base_url or os.environ.get("STEWARD_URL") or DEFAULT_URL
    return url.rstrip("/"), (token if token is not None else os.environ.get("STEWARD_TOKEN", "")).strip()


def client_headers(token: str) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "steward-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the parser of its successful answer's JSON (None for a 204)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str] = field(default_factory=dict)
    body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def finish(self, status: int, headers: Mapping[str, str], content: bytes, json_body: Callable[[], Any]) -> T:
        """The parsed answer, or the error it is (raised)."""
        if status >= 400:
            raise error_for_status(status, headers, content)
        return self.parse(json_body() if content else None)


def _id(value: str) -> str:
    """A path segment: ids are opaque, so quote everything (a `/` in an id must not become a path)."""
    return quote(value, safe="")


def _page_params(page_size: int | None, page_token: str | None, **filters: str | None) -> dict[str, str]:
    params = {name: value for name, value in filters.items() if value is not None}
    if page_size:
        params["page_size"] = str(page_size)
    if page_token:
        params["page_token"] = page_token
    return params


def _page(key: str, item: Callable[[Json], T]) -> Callable[[Json], Page[T]]:
    return lambda body: Page([item(entry) for entry in body[key]], body.get("next_page_token") or None)


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _none(_: object) -> None:
    return None


def create_conversation(title: str | None = None, idempotency_key: str | None = None) -> Call[Conversation]:
    body = {"title": title} if title is not None else {}
    return Call(
        "POST", f"{_API}/conversations", Conversation.from_json, body=body, headers=_idempotency(idempotency_key)
    )


def get_conversation(conversation_id: str) -> Call[Conversation]:
    return Call("GET", f"{_API}/conversations/{_id(conversation_id)}", Conversation.from_json)


def delete_conversation(conversation_id: str) -> Call[None]:
    return Call("DELETE", f"{_API}/conversations/{_id(conversation_id)}", _none)


def list_conversations(page_size: int | None = None, page_token: str | None = None) -> Call[Page[Conversation]]:
    params = _page_params(page_size, page_token)
    return Call("GET", f"{_API}/conversations", _page("conversations", Conversation.from_json), params=params)


def post_message(
    conversation_id: str, content: str, *, run_id: str | None = None, idempotency_key: str | None = None
) -> Call[RunStarted]:
    body: Json = {"content": content}
    if run_id:
        body["run_id"] = run_id
    path = f"{_API}/conversations/{_id(conversation_id)}/messages"
    return Call("POST", path, RunStarted.from_json, body=body, headers=_idempotency(idempotency_key))


def list_messages(
    conversation_id: str, page_size: int | None = None, page_token: str | None = None
) -> Call[Page[Message]]:
    path = f"{_API}/conversations/{_id(conversation_id)}/messages"
    return Call("GET", path, _page("messages", Message.from_json), params=_page_params(page_size, page_token))


def create_run(
    conversation_id: str,
    content: str | None = None,
    *,
    agent_id: str | None = None,
    run_id: str | None = None,
    mode: str | None = None,
    limits: Limits | None = None,
    client_tools: Sequence[ClientTool] = (),
    idempotency_key: str | None = None,
) -> Call[RunStarted]:
    body: Json = {"conversation_id": conversation_id}
    optional: dict[str, Any] = {"content": content, "agent_id": agent_id, "run_id": run_id, "mode": mode}
    body.update({name: value for name, value in optional.items() if value is not None})
    if limits is not None:
        body["limits"] = limits.to_json()
    if client_tools:
        body["client_tools"] = [tool.to_json() for tool in client_tools]
    return Call("POST", f"{_API}/runs", RunStarted.from_json, body=body, headers=_idempotency(idempotency_key))


def get_run(run_id: str) -> Call[Run]:
    return Call("GET", f"{_API}/runs/{_id(run_id)}", Run.from_json)


def list_runs(
    conversation_id: str | None = None, page_size: int | None = None, page_token: str | None = None
) -> Call[Page[Run]]:
    params = _page_params(page_size, page_token, conversation_id=conversation_id)
    return Call("GET", f"{_API}/runs", _page("runs", Run.from_json), params=params)


def cancel_run(run_id: str) -> Call[Run]:
    return Call("POST", f"{_API}/runs/{_id(run_id)}/cancel", Run.from_json)


def submit_tool_results(run_id: str, results: Iterable[ToolResult]) -> Call[Run]:
    body = {"results": [result.to_json() for result in results]}
    return Call("POST", f"{_API}/runs/{_id(run_id)}/tool_results", Run.from_json, body=body)


def list_confirmations(
    state: str | Sequence[str] | None = None,
    run_id: str | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
) -> Call[Page[Confirmation]]:
    """`state`: None for pending ones, `"all"`, or states (`"approved"`, ...)."""
    states = state if state is None or isinstance(state, str) else ",".join(state)
    params = _page_params(page_size, page_token, state=states, run_id=run_id)
    return Call("GET", f"{_API}/confirmations", _page("confirmations", Confirmation.from_json), params=params)


def get_confirmation(confirmation_id: str) -> Call[Confirmation]:
    return Call("GET", f"{_API}/confirmations/{_id(confirmation_id)}", Confirmation.from_json)


def decide_confirmation(
    confirmation_id: str,
    outcome: str,
    *,
    reason: str | None = None,
    edited_arguments: Json | None = None,
    expected_arguments_hash: str | None = None,
) -> Call[Confirmation]:
    """`outcome` is `"approve"` or `"reject"`; `expected_arguments_hash` is the hash the person was shown (a
    mismatch is refused, `ARGUMENTS_MISMATCH`)."""
    decision: Json = {"outcome": outcome}
    if reason is not None:
        decision["reason"] = reason
    if edited_arguments is not None:
        decision["edited_arguments"] = edited_arguments
    body: Json = {"decision": decision}
    if expected_arguments_hash is not None:
        body["expected_arguments_hash"] = expected_arguments_hash
    path = f"{_API}/confirmations/{_id(confirmation_id)}/decision"
    return Call("POST", path, Confirmation.from_json, body=body)


def apply_agents(
    files: Mapping[str, str] | None = None, agents: Sequence[Json] | None = None, validate_only: bool = False
) -> Call[list[AppliedAgent]]:
    """Create or replace agents by name from agent files (`{file name: YAML or JSON text}`) and agent JSON, all or
    none; an invalid document raises BadRequestError `AGENT_FILE_INVALID` with `errors` (docs/agents.md)."""
    body: Json = {"validate_only": validate_only}
    if files:
        body["files"] = [{"name": name, "content": content} for name, content in files.items()]
    if agents:
        body["agents"] = list(agents)
    return Call("POST", f"{_API}/agents/apply", _applied, body=body)


def _applied(body: Json) -> list[AppliedAgent]:
    return [AppliedAgent.from_json(item) for item in body["agents"]]


def get_agent(agent_id: str) -> Call[Agent]:
    return Call("GET", f"{_API}/agents/{_id(agent_id)}", Agent.from_json)


def list_agents(page_size: int | None = None, page_token: str | None = None) -> Call[Page[Agent]]:
    params = _page_params(page_size, page_token)
    return Call("GET", f"{_API}/agents", _page("agents", Agent.from_json), params=params)


def list_agent_tools(agent_id: str) -> Call[list[Tool]]:
    """The tools the agent may call, classified; `agent_id` "steward" is the default agent."""
    return Call("GET", f"{_API}/agents/{_id(agent_id)}/tools", lambda body: [Tool.from_json(t) for t in body["tools"]])


def list_tools() -> Call[ToolCatalog]:
    """Every tool the deployment knows, and its MCP servers."""
    return Call("GET", f"{_API}/tools", ToolCatalog.from_json)
