"""The MCP server: the SDK's low-level `Server` with Steward's tools, each call made as the authenticated caller.

The endpoint puts the caller's user id into each request's ASGI scope (`USER_ID`); the SDK hands the
request to the tool handler, which acts as that user: every service call carries the principal as the
signed internal token, exactly as the HTTP routes' calls do. The caller's bearer token goes no further
than the gateway: not to the services, and never to the MCP servers agents call as tools.

Arguments are checked against the tool's model; a failure the caller can fix is a tool result with
`isError: true` and `structuredContent.error.reason` (a stable reason from `ErrorReason`). An unknown tool
is a protocol error (INVALID_PARAMS), as the MCP specification has it.

**A result's content.** `structuredContent` holds the tool's data. Without a text of the tool's own, the
content is that data as one JSON text block (the specification's convention for clients that do not read
structured content). With one (chat's answer, a confirmation notice), the content is that text, then the data
as JSON *without* the `answer` member the text already holds: an agent's long answer travels once in the
content, not twice.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping
from typing import Any

import mcp_types as types
import structlog
from aiohttp import web
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from gateway.app_keys import CLIENTS, SETTINGS
from gateway.auth import bearer
from gateway.mcp import action_tools, read_tools
from gateway.mcp.tooling import Answer, Call, Progress, ToolDef, ToolError
from steward.auth import Principal
from steward.errors import StewardError

log = structlog.get_logger(__name__)

USER_ID = "steward.user_id"  # the ASGI scope key holding the authenticated caller's user id
SCOPES = "steward.scopes"  # the ASGI scope key holding the caller's scopes (None: all the user's rights)
TOOLS: dict[str, ToolDef] = {tool.name: tool for tool in [*read_tools.TOOLS, *action_tools.TOOLS]}
INSTRUCTIONS = (
    "Steward runs agents on a server. Use chat to talk to an agent (list_agents names them). Agents ask before "
    "they write: a chat answer may be a pending confirmation instead, which a person must approve or reject "
    "(decide_confirmation). Never decide one without the person's say."
)


def _result(data: dict[str, Any], text: str, *, error: bool) -> types.CallToolResult:
    if not text:
        content = [types.TextContent(text=json.dumps(data, ensure_ascii=False))]
    else:
        rest = {key: value for key, value in data.items() if key != "answer"}  # the text holds the answer
        content = [types.TextContent(text=text), types.TextContent(text=json.dumps(rest, ensure_ascii=False))]
    return types.CallToolResult(content=content, structured_content=data, is_error=error)


def failure(reason: str, message: str, metadata: Mapping[str, str] | None = None) -> types.CallToolResult:
    error: dict[str, Any] = {"reason": reason, "message": message}
    if metadata:
        error["metadata"] = dict(metadata)
    return _result({"error": error}, f"{reason}: {message}", error=True)


def success(answer: Answer) -> types.CallToolResult:
    return _result(answer.data, answer.text, error=answer.error)


def _invalid(exc: ValidationError) -> types.CallToolResult:
    problems = [f"{'.'.join(str(part) for part in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()]
    first = ".".join(str(part) for part in exc.errors()[0]["loc"]) if exc.errors() else ""
    return failure("INVALID_ARGUMENT", "; ".join(problems), {"field": first} if first else None)


async def run_tool(definition: ToolDef, call: Call, arguments: Mapping[str, Any]) -> types.CallToolResult:
    try:
        args = definition.arguments.model_validate(dict(arguments))
    except ValidationError as exc:
        return _invalid(exc)
    try:
        return success(await definition.run(call, args))
    except ToolError as exc:
        return failure(exc.reason, exc.message, exc.metadata)
    except StewardError as exc:
        return failure(exc.reason, exc.message, exc.metadata)
    except Exception:  # a crash is told as a generic failure; its details stay in the log
        log.exception("mcp_tool_crashed", tool=definition.name)
        return failure("INTERNAL", "internal error")


def _user_id(ctx: ServerRequestContext[Any, Any]) -> str:
    scope = getattr(ctx.request, "scope", None)
    user_id = scope.get(USER_ID) if isinstance(scope, Mapping) else None
    if not isinstance(user_id, str) or not user_id:
        # The endpoint authenticates every request before the SDK sees it; this is a wiring bug.
        raise MCPError(code=types.INTERNAL_ERROR, message="the request has no authenticated caller")
    return user_id


def _scopes(ctx: ServerRequestContext[Any, Any]) -> frozenset[str] | None:
    """The caller's scopes (None: an unscoped caller, with all its user's rights)."""
    scope = getattr(ctx.request, "scope", None)
    held = scope.get(SCOPES) if isinstance(scope, Mapping) else None
    return frozenset(held) if held is not None else None


def _progress(ctx: ServerRequestContext[Any, Any]) -> Progress:
    """Messages as `notifications/progress` when the client asked for progress (a no-op otherwise). `progress`
    counts the notifications sent, so it strictly increases (the specification's rule); empty messages are not
    sent. No `total`: how long a run goes is not known."""
    sent = 0

    async def report(message: str) -> None:
        nonlocal sent
        if not message:
            return
        sent += 1
        try:
            await ctx.session.report_progress(sent, message=message)
        except Exception:  # noqa: BLE001 - a client that stopped listening does not stop the tool
            log.debug("mcp_progress_dropped")

    return report


def version() -> str:
    """Steward's version, as `serverInfo.version`."""
    try:
        return importlib.metadata.version("steward")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0.0.0+unknown"


def build_server(app: web.Application) -> Server[Any]:
    """A server whose tools use `app`'s service clients (open when the first call arrives)."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[definition.tool() for definition in TOOLS.values()])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        definition = TOOLS.get(params.name)
        if definition is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool: {params.name}")
        user_id = _user_id(ctx)
        held = _scopes(ctx)
        if held is not None and definition.scope not in held:
            return failure(
                "PERMISSION_DENIED",
                f"this token may not use {definition.name}: it needs the {definition.scope} scope",
                {"scope": definition.scope},
            )
        call = Call(app[CLIENTS], app[SETTINGS], user_id, _progress(ctx))
        with (
            bearer.acting_as(Principal(user_id=user_id)),
            structlog.contextvars.bound_contextvars(user_id=user_id, mcp_tool=definition.name),
        ):
            return await run_tool(definition, call, params.arguments or {})

    def input_schema(name: str) -> dict[str, Any] | None:
        definition = TOOLS.get(name)
        return definition.input_schema() if definition is not None else None

    return Server(
        "steward",
        version=version(),
        title="Steward",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
