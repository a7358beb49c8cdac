"""The blocking client: `Client`. Its methods only send the shared `calls` and run the shared `EventStream`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from steward.client import calls
from steward.client.errors import StewardConnectionError
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
    RunEvent,
    RunStarted,
    Tool,
    ToolCatalog,
    ToolResult,
)
from steward.client.stream import EventStream, StreamInterruptedError, StreamPolicy

__all__ = ["Client"]

T = TypeVar("T")


def _every(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every item of a list, a page at a time."""
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page.items
        if not page.next_page_token:
            return
        token = page.next_page_token


class Client:
    """Steward's HTTP API, blocking. `base_url` and `token` default to `STEWARD_URL` and `STEWARD_TOKEN`."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        stream_policy: StreamPolicy | None = None,
    ) -> None:
        self.base_url, token = calls.resolve(base_url, token)
        self.timeout = timeout
        self.stream_policy = stream_policy or StreamPolicy()
        self._http = httpx.Client(base_url=self.base_url, headers=calls.client_headers(token), timeout=timeout)
        self.conversations = Conversations(self)
        self.messages = Messages(self)
        self.runs = Runs(self)
        self.confirmations = Confirmations(self)
        self.agents = Agents(self)

    def send(self, call: calls.Call[T]) -> T:
        """Send one call and return its parsed answer; an error answer is raised as a `StewardAPIError`."""
        try:
            response = self._http.request(
                call.method, call.path, params=call.params or None, json=call.body, headers=call.headers or None
            )
        except httpx.TransportError as error:
            raise StewardConnectionError(f"could not reach {self.base_url}: {type(error).__name__}") from error
        return call.finish(response.status_code, response.headers, response.content, response.json)

    def apply_agents(
        self,
        files: Mapping[str, str] | None = None,
        *,
        agents: Sequence[dict[str, Any]] | None = None,
        validate_only: bool = False,
    ) -> list[AppliedAgent]:
        """Create or replace the caller's agents by name from agent files ({file name: YAML or JSON text}) and agent
        JSON, all or none: each document's result ("created", "updated" or "unchanged") and agent. An invalid
        document raises `BadRequestError` (`AGENT_FILE_INVALID`) whose `errors` name each file, document and field."""
        return self.send(calls.apply_agents(files, agents, validate_only))

    def list_tools(self, agent_id: str) -> list[Tool]:
        """The tools the agent may call (`"steward"`: the default agent), each read or write, and why."""
        return self.send(calls.list_agent_tools(agent_id))

    def tool_catalog(self) -> ToolCatalog:
        """Every tool the deployment knows (built-in and MCP), and its MCP servers with their status."""
        return self.send(calls.list_tools())

    def stream_events(self, run_id: str, after: int = 0, policy: StreamPolicy | None = None) -> Iterator[RunEvent]:
        """See `Runs.events`."""
        stream = EventStream(run_id, after, policy or self.stream_policy)
        timeout = httpx.Timeout(self.timeout, read=stream.policy.read_timeout)
        while True:
            try:
                with self._http.stream("GET", stream.path, headers=stream.headers(), timeout=timeout) as response:
                    if response.status_code != 200:
                        delay = stream.refused(response.status_code, response.headers, response.read())
                    else:
                        # After the end event the server ends the stream: reading on to its end closes the
                        # connection cleanly (leaving early would make the gateway see a client gone mid-answer).
                        for line in response.iter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                        if stream.done:
                            return
                        delay = stream.dropped(None)
            except (httpx.TransportError, StreamInterruptedError) as error:
                if stream.done:  # the end event was yielded; only the stream's close failed
                    return
                delay = stream.dropped(error)
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Conversations:
    def __init__(self, client: Client) -> None:
        self._send = client.send

    def create(self, title: str | None = None, *, idempotency_key: str | None = None) -> Conversation:
        return self._send(calls.create_conversation(title, idempotency_key))

    def get(self, conversation_id: str) -> Conversation:
        return self._send(calls.get_conversation(conversation_id))

    def delete(self, conversation_id: str) -> None:
        self._send(calls.delete_conversation(conversation_id))

    def page(self, *, page_size: int | None = None, page_token: str | None = None) -> Page[Conversation]:
        return self._send(calls.list_conversations(page_size, page_token))

    def list(self, *, page_size: int | None = None) -> Iterator[Conversation]:
        """Every conversation of the caller's, fetched a page at a time as the iteration goes."""
        return _every(lambda token: self.page(page_size=page_size, page_token=token))


class Messages:
    def __init__(self, client: Client) -> None:
        self._send = client.send

    def post(
        self, conversation_id: str, content: str, *, run_id: str | None = None, idempotency_key: str | None = None
    ) -> RunStarted:
        """Add a user message and start the run that answers it; read the answer with `runs.events`."""
        return self._send(calls.post_message(conversation_id, content, run_id=run_id, idempotency_key=idempotency_key))

    def page(
        self, conversation_id: str, *, page_size: int | None = None, page_token: str | None = None
    ) -> Page[Message]:
        return self._send(calls.list_messages(conversation_id, page_size, page_token))

    def list(self, conversation_id: str, *, page_size: int | None = None) -> Iterator[Message]:
        return _every(lambda token: self.page(conversation_id, page_size=page_size, page_token=token))


class Runs:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._send = client.send

    def create(
        self,
        conversation_id: str,
        content: str | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mode: str | None = None,
        limits: Limits | None = None,
        client_tools: Sequence[ClientTool] = (),
        idempotency_key: str | None = None,
    ) -> RunStarted:
        call = calls.create_run(
            conversation_id,
            content,
            agent_id=agent_id,
            run_id=run_id,
            mode=mode,
            limits=limits,
            client_tools=client_tools,
            idempotency_key=idempotency_key,
        )
        return self._send(call)

    def get(self, run_id: str) -> Run:
        return self._send(calls.get_run(run_id))

    def page(
        self, *, conversation_id: str | None = None, page_size: int | None = None, page_token: str | None = None
    ) -> Page[Run]:
        return self._send(calls.list_runs(conversation_id, page_size, page_token))

    def list(self, *, conversation_id: str | None = None, page_size: int | None = None) -> Iterator[Run]:
        return _every(lambda token: self.page(conversation_id=conversation_id, page_size=page_size, page_token=token))

    def cancel(self, run_id: str) -> Run:
        return self._send(calls.cancel_run(run_id))

    def submit_tool_results(self, run_id: str, results: Iterable[ToolResult]) -> Run:
        return self._send(calls.submit_tool_results(run_id, results))

    def events(self, run_id: str, *, after: int = 0, policy: StreamPolicy | None = None) -> Iterator[RunEvent]:
        """The run's events after seq `after`, until its end event, resuming by itself over dropped connections
        (see `StreamPolicy`); 410 raises `CursorExpiredError`, 401/403/404 raise at once."""
        return self._client.stream_events(run_id, after, policy)


class Confirmations:
    def __init__(self, client: Client) -> None:
        self._send = client.send

    def page(
        self,
        *,
        state: str | Sequence[str] | None = None,
        run_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[Confirmation]:
        return self._send(calls.list_confirmations(state, run_id, page_size, page_token))

    def list(
        self, *, state: str | Sequence[str] | None = None, run_id: str | None = None, page_size: int | None = None
    ) -> Iterator[Confirmation]:
        """The caller's confirmations: pending ones by default, `state="all"` or a list of states."""
        return _every(lambda token: self.page(state=state, run_id=run_id, page_size=page_size, page_token=token))

    def get(self, confirmation_id: str) -> Confirmation:
        return self._send(calls.get_confirmation(confirmation_id))

    def decide(
        self,
        confirmation_id: str,
        outcome: str,
        *,
        reason: str | None = None,
        edited_arguments: dict[str, Any] | None = None,
        expected_arguments_hash: str | None = None,
    ) -> Confirmation:
        """Approve (`"approve"`) or reject (`"reject"`) once; pass the `arguments_hash` the person was shown."""
        call = calls.decide_confirmation(
            confirmation_id,
            outcome,
            reason=reason,
            edited_arguments=edited_arguments,
            expected_arguments_hash=expected_arguments_hash,
        )
        return self._send(call)


class Agents:
    def __init__(self, client: Client) -> None:
        self._send = client.send

    def page(self, *, page_size: int | None = None, page_token: str | None = None) -> Page[Agent]:
        return self._send(calls.list_agents(page_size, page_token))

    def list(self, *, page_size: int | None = None) -> Iterator[Agent]:
        """The caller's agents, by name."""
        return _every(lambda token: self.page(page_size=page_size, page_token=token))

    def get(self, agent_id: str) -> Agent:
        return self._send(calls.get_agent(agent_id))
