"""The MCP server: the SDK's low-level `Server` with Steward's tools, each call made as the authenticated caller.

The endpoint puts the caller's user id into each request's ASGI scope (`USER_ID`); the SDK hands the
request to the tool handler, which acts as that user: every service call carries the principal as the
signed internal token, exactly as the HTTP routes' calls do. The caller's bearer token goes no further
than the gateway: not to the services, and never to the MCP servers agents call as tools.

Arguments are checked against the tool's model; a failure the caller can fix is a tool result with
`isError: true` and `structuredContent.error.reason` (a stable reason from `ErrorReason`). An unknown tool
is a protocol error (INVALID_PARAMS), as the MCP specification has it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import mcp_types as types
import structlog
from aiohttp import web
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from gateway import auth
from gateway.keys import CLIENTS, SETTINGS
from gateway.mcp import chat, tools
from gateway.mcp.calls import Answer, Call, ToolDef, ToolError
from steward.auth import Principal
from steward.errors import StewardError, from_rpc_error

log = structlog.get_logger(__name__)

USER_ID = "steward.user_id"  # the ASGI scope key holding the authenticated caller's user id
TOOLS: dict[str, ToolDef] = {tool.name: tool for tool in [*tools.TOOLS, *chat.TOOLS]}
INSTRUCTIONS = (
    "Steward runs agents on a server. Use chat to talk to an agent (list_agents names them). Agents ask before "
    "they write: a chat answer may be a pending confirmation instead, which a person must approve or reject "
    "(decide_confirmation). Never decide one without the person's say."
)


def _result(data: dict[str, Any], text: str, *, error: bool) -> types.CallToolResult:
    content = [types.TextContent(text=text)] if text else []
    content.append(types.TextContent(text=json.dumps(data, ensure_ascii=False)))
    return types.CallToolResult(content=content, structured_content=data, is_error=error)


def failure(reason: str, message: str, metadata: Mapping[str, str] | None = None) -> types.CallToolResult:
    error: dict[str, Any] = {"reason": reason, "message": message}
    if metadata:
        error["metadata"] = dict(metadata)
    return _result({"error": error}, f"{reason}: {message}", error=True)


def success(answer: Answer) -> types.CallToolResult:
    return _result(answer.data, answer.text, error=False)


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
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        return failure(error.reason, error.message, error.metadata)
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


def _progress(ctx: ServerRequestContext[Any, Any]) -> Callable[[str], Awaitable[None]]:
    """Text as `notifications/progress` (progress = characters so far), when the client asked for progress."""
    sent = 0

    async def report(text: str) -> None:
        nonlocal sent
        sent += len(text)
        try:
            await ctx.session.report_progress(sent, message=text)
        except Exception:  # noqa: BLE001 - a client that stopped listening does not stop the tool
            log.debug("mcp_progress_dropped")

    return report


def build_server(app: web.Application, version: str = "") -> Server[Any]:
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
        call = Call(app[CLIENTS], app[SETTINGS], user_id, _progress(ctx))
        with (
            auth.acting_as(Principal(user_id=user_id)),
            structlog.contextvars.bound_contextvars(user_id=user_id, mcp_tool=definition.name),
        ):
            return await run_tool(definition, call, params.arguments or {})

    def input_schema(name: str) -> dict[str, Any] | None:
        definition = TOOLS.get(name)
        return definition.input_schema() if definition is not None else None

    return Server(
        "steward",
        version=version,
        title="Steward",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
