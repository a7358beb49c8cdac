"""MCP client manager: one dedicated task per server holds its session; calls come from any task.

Each `McpServerConnection` runs one asyncio task that enters the SDK's `Client` (stdio or
streamable HTTP), lists the tools, refreshes the list every `refresh_interval` and at once when
the server says it changed (a `subscriptions/listen` stream on 2026-07-28 sessions, the
`notifications/tools/list_changed` notification on older ones), and reconnects
with backoff (0.2 s doubling to 10 s) when the session ends: the server's stream reached its end
(a stdio server exited), a call found the connection closed, or the transport failed. anyio cancel
scopes must be exited by the task that entered them, so only that task enters and leaves the
session; other tasks send requests through it, which the SDK multiplexes.

Calls never raise for what a server or the network does: every outcome is a `ToolResult` whose
status says whether the call certainly did not run (`UNAVAILABLE`), ran (`OK`, `TOOL_ERROR`), or
may have run (`TIMEOUT`, `CONNECTION_LOST`, `PROTOCOL_ERROR`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, cast

import anyio
import mcp_types as types
import structlog
from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from services.runtime.tools import proposals
from services.runtime.tools.classify import ToolHints, matches
from services.runtime.tools.config import ServerConfig, ToolsConfig
from services.runtime.tools.model import ToolCallStatus, ToolDefinition, ToolResult
from services.runtime.tools.transport import open_transport, watched

IDEMPOTENCY_META_KEY = "steward/idempotency_key"
REPLAYED_META_KEY = "steward/replayed"
CLIENT_INFO = types.Implementation(name="steward-runtime", version="0.1.0")
RECONNECT_INITIAL = 0.2
RECONNECT_MAX = 10.0
MAX_LIST_PAGES = 100
CLOSE_TIMEOUT = 10.0
_TIMEOUT_GRACE = 0.5

log = structlog.get_logger(__name__)


def _cause(exc: BaseException) -> str:
    """The first leaf of an exception group (transport failures arrive wrapped in task-group groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _hints(annotations: types.ToolAnnotations | None) -> ToolHints:
    if annotations is None:
        return ToolHints()
    return ToolHints(annotations.read_only_hint, annotations.destructive_hint, annotations.idempotent_hint)


def _text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ResourceLink):
        return f"[resource: {block.uri}]"
    return f"[{block.type} content not shown]"


def _result(result: types.CallToolResult) -> ToolResult:
    text = "\n".join(_text(block) for block in result.content)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    return ToolResult(
        status=ToolCallStatus.TOOL_ERROR if result.is_error else ToolCallStatus.OK,
        text=text,
        structured=result.structured_content,
        replayed=bool((result.meta or {}).get(REPLAYED_META_KEY)),
    )


class McpServerConnection:
    """One MCP server: its session (held by a dedicated task), its current tool list, and calls to it."""

    def __init__(self, name: str, config: ServerConfig, refresh_interval: float) -> None:
        self.name = name
        self.config = config
        self.refresh_interval = refresh_interval
        self.connects = 0
        """How many sessions have been established (1 + reconnections)."""
        self.last_error: str | None = None
        self._client: Client | None = None
        self._generation = 0
        self._lost = False
        self._closing = False
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._changed = False  # the server said its tool list changed: list it again at the next wake
        self._scope = anyio.CancelScope()
        self._tools: tuple[ToolDefinition, ...] = ()
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """A session is up and not known to be lost."""
        return self._ready.is_set() and self._client is not None

    @property
    def tools(self) -> tuple[ToolDefinition, ...]:
        """The last tool list (kept while the server is down, so the agent's tool set does not flap)."""
        return self._tools

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp-server:{self.name}")

    async def wait_ready(self) -> None:
        """Return once a session is established (bound it with a cancel scope such as `anyio.move_on_after`)."""
        await self._ready.wait()

    async def aclose(self) -> None:
        """Close the session (stdio servers are stopped) and end the task. In-flight calls end CONNECTION_LOST."""
        self._closing = True
        self._scope.cancel()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT)
        if not done:
            log.warning("mcp_server_close_timeout", server=self.name)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _mark_lost(self, generation: int) -> None:
        if generation == self._generation and not self._lost:
            self._lost = True
            self._ready.clear()
            self._wake.set()

    async def _run(self) -> None:
        delay = RECONNECT_INITIAL
        with self._scope:
            while not self._closing:
                self._generation += 1
                self._lost = False
                generation = self._generation
                transport = watched(open_transport(self.config), functools.partial(self._mark_lost, generation))
                try:
                    async with Client(
                        transport,
                        cache=None,
                        client_info=CLIENT_INFO,
                        read_timeout_seconds=self.config.connect_timeout,
                        message_handler=self._on_message,
                    ) as client:
                        await self._list(client)
                        if not self._lost:  # the stream may have ended while we listed
                            self._client, self.last_error, delay = client, None, RECONNECT_INITIAL
                            self.connects += 1
                            self._ready.set()
                            log.info("mcp_server_connected", server=self.name, tools=len(self._tools))
                            await self._serve(client, generation)
                except Exception as exc:  # noqa: BLE001 - any failure of a session means: reconnect
                    self.last_error = _cause(exc)
                    log.warning("mcp_server_unavailable", server=self.name, error=self.last_error)
                else:
                    if not self._closing:
                        self.last_error = "the session ended (the server exited or closed the connection)"
                        log.warning("mcp_server_unavailable", server=self.name, error=self.last_error)
                finally:
                    self._client = None
                    self._ready.clear()
                if self._closing:
                    break
                self._wake.clear()
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                delay = min(delay * 2, RECONNECT_MAX)

    async def _serve(self, client: Client, generation: int) -> None:
        """Refresh the tool list periodically, and when the server says it changed, until the session is lost."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self.refresh_interval
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow_changes, client)
            while not self._lost:
                with anyio.move_on_after(max(next_refresh - loop.time(), 0)):
                    await self._wake.wait()
                self._wake.clear()
                if self._lost:
                    break
                if self._changed or loop.time() >= next_refresh:
                    self._changed = False
                    await self._refresh(client, generation)
                    next_refresh = loop.time() + self.refresh_interval
            group.cancel_scope.cancel()

    def _note_change(self) -> None:
        self._changed = True
        self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        """The SDK's handler for what the server sends unasked: a tool-list change (sessions before 2026-07-28)."""
        if isinstance(message, types.ToolListChangedNotification):
            self._note_change()
        await anyio.lowlevel.checkpoint()

    async def _follow_changes(self, client: Client) -> None:
        """On a 2026-07-28 session whose server announces tool-list changes, listen for them. Without it (an older
        session, a server that does not, a subscription that ended) the periodic refresh still applies."""
        try:
            tools = client.server_capabilities.tools
            if tools is None or not tools.list_changed:
                return
            async with client.listen(tools_list_changed=True) as subscription:
                honored = subscription.honored
                if honored is None or not honored.tools_list_changed:
                    return
                async for _ in subscription:
                    self._note_change()
        except ListenNotSupportedError:
            return  # an older session: changes come as notifications (_on_message)
        except (MCPError, SubscriptionLost, TimeoutError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            log.info("mcp_tool_changes_not_followed", server=self.name, error=_cause(exc))
        except Exception as exc:  # noqa: BLE001 - best effort: never end a working session over it
            log.warning("mcp_tool_changes_not_followed", server=self.name, error=_cause(exc))

    async def _list(self, client: Client) -> None:
        listed: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        found = [d for tool in listed if (d := self._definition(tool)) is not None]
        # A proposal companion is for the runtime, not the model: it is not offered (ADR 0017).
        companions = {d.proposal.companion for d in found if d.proposal is not None}
        self._tools = tuple(d for d in found if d.remote_name not in companions)

    def _definition(self, tool: types.Tool) -> ToolDefinition | None:
        if self.config.tools is not None and not matches(tool.name, self.config.tools):
            return None
        try:
            validator_for(tool.input_schema, default=Draft202012Validator).check_schema(tool.input_schema)
        except SchemaError as exc:
            log.warning("mcp_tool_schema_invalid", server=self.name, tool=tool.name, error=exc.message)
            return None
        qualified = f"{self.name}.{tool.name}"
        declared = proposals.spec_from_meta(tool.meta, self.config.trust, qualified)
        return ToolDefinition(
            name=qualified,
            description=tool.description or tool.title or tool.name,
            input_schema=tool.input_schema,
            hints=_hints(tool.annotations),
            trust=self.config.trust,
            server=self.name,
            remote_name=tool.name,
            honours_keys=self.config.idempotency_keys,
            proposal=proposals.merged(self.config.proposals.get(tool.name), declared),
        )

    async def _refresh(self, client: Client, generation: int) -> bool:
        try:
            await self._list(client)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                self._mark_lost(generation)
            else:
                log.warning("mcp_tool_list_failed", server=self.name, code=exc.code, error=exc.message)
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._mark_lost(generation)
            return False
        return True

    async def refresh(self) -> bool:
        """List the tools now, in the caller's task; False when the server is unavailable or refused."""
        client, generation = self._client if self.available else None, self._generation
        return client is not None and await self._refresh(client, generation)

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None,
        timeout: float,  # noqa: ASYNC109 - it decides the result (TIMEOUT vs UNAVAILABLE); no cancellation
    ) -> ToolResult:
        """Call `tool` (the server's own name). The idempotency key travels in `_meta`; see module doc."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.available and not self._closing:
            with anyio.move_on_after(timeout):
                await self._ready.wait()
        client, generation = self._client if self.available else None, self._generation
        remaining = deadline - loop.time()
        if client is None or remaining <= 0:
            reason = f": {self.last_error}" if self.last_error else ""
            return ToolResult.failure(ToolCallStatus.UNAVAILABLE, f"MCP server {self.name!r} is unavailable{reason}")
        meta: types.RequestParamsMeta | None = None
        if idempotency_key is not None:  # an open map on the wire; the TypedDict only names SDK keys
            meta = cast("types.RequestParamsMeta", {IDEMPOTENCY_META_KEY: idempotency_key})
        qualified = f"{self.name}.{tool}"
        try:
            with anyio.fail_after(remaining + _TIMEOUT_GRACE):
                result = await client.call_tool(tool, dict(arguments), read_timeout_seconds=remaining, meta=meta)
        except TimeoutError:
            return ToolResult.failure(ToolCallStatus.TIMEOUT, f"{qualified} did not answer within {timeout:g} s")
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                return ToolResult.failure(ToolCallStatus.TIMEOUT, f"{qualified} did not answer within {timeout:g} s")
            if exc.code == types.CONNECTION_CLOSED:
                self._mark_lost(generation)
                return ToolResult.failure(ToolCallStatus.CONNECTION_LOST, f"connection to {self.name!r} was lost")
            return ToolResult.failure(ToolCallStatus.PROTOCOL_ERROR, f"{qualified} failed: {exc.message}")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._mark_lost(generation)
            return ToolResult.failure(ToolCallStatus.CONNECTION_LOST, f"connection to {self.name!r} was lost")
        except (RuntimeError, ValidationError) as exc:  # invalid result, output schema mismatch, input required
            return ToolResult.failure(ToolCallStatus.PROTOCOL_ERROR, f"{qualified} returned an invalid result: {exc}")
        return _result(result)


class McpClientManager:
    """All configured MCP servers. Use `async with`, or `start()` and `aclose()`."""

    def __init__(self, config: ToolsConfig) -> None:
        self._connections = {
            name: McpServerConnection(name, server, config.refresh_interval_for(name))
            for name, server in config.servers.items()
        }

    @property
    def servers(self) -> Mapping[str, McpServerConnection]:
        return self._connections

    def start(self) -> None:
        for connection in self._connections.values():
            connection.start()

    async def wait_ready(self) -> None:
        """Return once every server is connected (bound it with a cancel scope such as `anyio.move_on_after`)."""
        await asyncio.gather(*(connection.wait_ready() for connection in self._connections.values()))

    def definitions(self) -> list[ToolDefinition]:
        return [tool for connection in self._connections.values() for tool in connection.tools]

    async def refresh(self, server: str | None = None) -> None:
        targets = [self._connections[server]] if server is not None else list(self._connections.values())
        await asyncio.gather(*(connection.refresh() for connection in targets))

    async def aclose(self) -> None:
        await asyncio.gather(*(connection.aclose() for connection in self._connections.values()))

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
