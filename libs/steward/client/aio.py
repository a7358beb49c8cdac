"""The asyncio client: `AsyncClient`, `Client`'s twin; only the I/O differs (both send the shared `calls`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


async def _every(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Every item of a list, a page at a time."""
    token: str | None = None
    while True:
        page = await fetch(token)
        for item in page.items:
            yield item
        if not page.next_page_token:
            return
        token = page.next_page_token


class AsyncClient:
    """Steward's HTTP API for asyncio. `base_url` and `token` default to `STEWARD_URL` and `STEWARD_TOKEN`."""

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
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=calls.client_headers(token), timeout=timeout)
        self.conversations = Conversations(self)
        self.messages = Messages(self)
        self.runs = Runs(self)
        self.confirmations = Confirmations(self)
        self.agents = Agents(self)

    async def send(self, call: calls.Call[T]) -> T:
        """Send one call and return its parsed answer; an error answer is raised as a `StewardAPIError`."""
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params or None, json=call.body, headers=call.headers or None
            )
        except httpx.TransportError as error:
            raise StewardConnectionError(f"could not reach {self.base_url}: {type(error).__name__}") from error
        return call.finish(response.status_code, response.headers, response.content, response.json)

    async def apply_agents(
        self,
        files: Mapping[str, str] | None = None,
        *,
        agents: Sequence[dict[str, Any]] | None = None,
        validate_only: bool = False,
    ) -> list[AppliedAgent]:
        """Create or replace the caller's agents by name from agent files ({file name: YAML or JSON text}) and agent
        JSON, all or none: each document's result ("created", "updated" or "unchanged") and agent. An invalid
        document raises `BadRequestError` (`AGENT_FILE_INVALID`) whose `errors` name each file, document and field."""
        return await self.send(calls.apply_agents(files, agents, validate_only))

    async def list_tools(self, agent_id: str) -> list[Tool]:
        """The tools the agent may call (`"steward"`: the default agent), each read or write, and why."""
        return await self.send(calls.list_agent_tools(agent_id))

    async def tool_catalog(self) -> ToolCatalog:
        """Every tool the deployment knows (built-in and MCP), and its MCP servers with their status."""
        return await self.send(calls.list_tools())

    async def stream_events(
        self, run_id: str, after: int = 0, policy: StreamPolicy | None = None
    ) -> AsyncIterator[RunEvent]:
        """See `Runs.events`."""
        stream = EventStream(run_id, after, policy or self.stream_policy)
        timeout = httpx.Timeout(self.timeout, read=stream.policy.read_timeout)
        while True:
            try:
                async with self._http.stream("GET", stream.path, headers=stream.headers(), timeout=timeout) as response:
                    if response.status_code != 200:
                        delay = stream.refused(response.status_code, response.headers, await response.aread())
                    else:
                        # After the end event the server ends the stream: reading on to its end closes the
                        # connection cleanly (leaving early would make the gateway see a client gone mid-answer).
                        async for line in response.aiter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                        if stream.done:
                            return
                        delay = stream.dropped(None)
            except (httpx.TransportError, StreamInterruptedError) as error:
                if stream.done:  # the end event was yielded; only the stream's close failed
                    return
                delay = stream.dropped(error)
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Conversations:
    def __init__(self, client: AsyncClient) -> None:
        self._send = client.send

    async def create(self, title: str | None = None, *, idempotency_key: str | None = None) -> Conversation:
        return await self._send(calls.create_conversation(title, idempotency_key))

    async def get(self, conversation_id: str) -> Conversation:
        return await self._send(calls.get_conversation(conversation_id))

    async def delete(self, conversation_id: str) -> None:
        await self._send(calls.delete_conversation(conversation_id))

    async def page(self, *, page_size: int | None = None, page_token: str | None = None) -> Page[Conversation]:
        return await self._send(calls.list_conversations(page_size, page_token))

    def list(self, *, page_size: int | None = None) -> AsyncIterator[Conversation]:
        """Every conversation of the caller's, fetched a page at a time as the iteration goes."""
        return _every(lambda token: self.page(page_size=page_size, page_token=token))


class Messages:
    def __init__(self, client: AsyncClient) -> None:
        self._send = client.send

    async def post(
        self, conversation_id: str, content: str, *, run_id: str | None = None, idempotency_key: str | None = None
    ) -> RunStarted:
        """Add a user message and start the run that answers it; read the answer with `runs.events`."""
        return await self._send(
            calls.post_message(conversation_id, content, run_id=run_id, idempotency_key=idempotency_key)
        )

    async def page(
        self, conversation_id: str, *, page_size: int | None = None, page_token: str | None = None
    ) -> Page[Message]:
        return await self._send(calls.list_messages(conversation_id, page_size, page_token))

    def list(self, conversation_id: str, *, page_size: int | None = None) -> AsyncIterator[Message]:
        return _every(lambda token: self.page(conversation_id, page_size=page_size, page_token=token))


class Runs:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._send = client.send

    async def create(
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
        return await self._send(call)

    async def get(self, run_id: str) -> Run:
        return await self._send(calls.get_run(run_id))

    async def page(
        self, *, conversation_id: str | None = None, page_size: int | None = None, page_token: str | None = None
    ) -> Page[Run]:
        return await self._send(calls.list_runs(conversation_id, page_size, page_token))

    def list(self, *, conversation_id: str | None = None, page_size: int | None = None) -> AsyncIterator[Run]:
        return _every(lambda token: self.page(conversation_id=conversation_id, page_size=page_size, page_token=token))

    async def cancel(self, run_id: str) -> Run:
        return await self._send(calls.cancel_run(run_id))

    async def submit_tool_results(self, run_id: str, results: Iterable[ToolResult]) -> Run:
        return await self._send(calls.submit_tool_results(run_id, results))

    def events(self, run_id: str, *, after: int = 0, policy: StreamPolicy | None = None) -> AsyncIterator[RunEvent]:
        """The run's events after seq `after`, until its end event, resuming by itself over dropped connections
        (see `StreamPolicy`); 410 raises `CursorExpiredError`, 401/403/404 raise at once."""
        return self._client.stream_events(run_id, after, policy)


class Confirmations:
    def __init__(self, client: AsyncClient) -> None:
        self._send = client.send

    async def page(
        self,
        *,
        state: str | Sequence[str] | None = None,
        run_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[Confirmation]:
        return await self._send(calls.list_confirmations(state, run_id, page_size, page_token))

    def list(
        self, *, state: str | Sequence[str] | None = None, run_id: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Confirmation]:
        """The caller's confirmations: pending ones by default, `state="all"` or a list of states."""
        return _every(lambda token: self.page(state=state, run_id=run_id, page_size=page_size, page_token=token))

    async def get(self, confirmation_id: str) -> Confirmation:
        return await self._send(calls.get_confirmation(confirmation_id))

    async def decide(
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
        return await self._send(call)


class Agents:
    def __init__(self, client: AsyncClient) -> None:
        self._send = client.send

    async def page(self, *, page_size: int | None = None, page_token: str | None = None) -> Page[Agent]:
        return await self._send(calls.list_agents(page_size, page_token))

    def list(self, *, page_size: int | None = None) -> AsyncIterator[Agent]:
        """The caller's agents, by name."""
        return _every(lambda token: self.page(page_size=page_size, page_token=token))

    async def get(self, agent_id: str) -> Agent:
        return await self._send(calls.get_agent(agent_id))
