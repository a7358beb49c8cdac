"""What every MCP tool is made of: its definition, the call it serves, what it answers, and how it fails.

A tool's arguments are a pydantic model: the model's JSON Schema is the tool's `inputSchema`, and the same
model checks the arguments a client sends, so the two cannot drift apart. A tool answers an `Answer`
(structured data, and optionally a text for people and models; `error` for a run that failed, was cancelled
or expired). A failure the model can fix (an unknown agent, a bad or foreign id, a refused decision) is a
`ToolError` with a stable reason, or a `StewardError` from a service; the server turns both into a tool
result with `isError: true`, never a protocol error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict

from gateway.app_keys import Clients
from gateway.settings import GatewaySettings

Progress = Callable[[str], Awaitable[None]]  # sends one progress notification with this message (if asked for)


class Arguments(BaseModel):
    """Base of every tool's arguments: unknown arguments are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Call:
    """One tool call: the services, the settings, the caller, and a way to report progress."""

    clients: Clients
    settings: GatewaySettings
    user_id: str
    progress: Progress

    @property
    def timeout(self) -> float:
        """The deadline of every unary service call a tool makes (`upstream_timeout`)."""
        return self.settings.upstream_timeout


@dataclass(frozen=True)
class Answer:
    """A tool's result: `data` becomes `structuredContent`; `text`, when given, is the content written for the
    person or model reading it (see `server.result`). `error`: the result is `isError` (a run that failed, was
    cancelled or expired)."""

    data: dict[str, Any]
    text: str = ""
    error: bool = False


@dataclass
class ToolError(Exception):
    """A failure the caller can fix, with a stable reason from `steward.common.v1.ErrorReason`."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


Runner = Callable[[Call, Any], Awaitable[Answer]]


@dataclass(frozen=True)
class ToolDef:
    name: str
    title: str
    description: str
    arguments: type[Arguments]
    annotations: types.ToolAnnotations
    run: Runner
    # The scope a scoped caller needs for this tool besides `mcp` (gateway.auth.scopes): the one its HTTP route needs.
    scope: str

    def input_schema(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    def tool(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=self.input_schema(),
            annotations=self.annotations,
        )


def read_only(title: str) -> types.ToolAnnotations:
    """Annotations of a tool that only reads the caller's own Steward data."""
    return types.ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=False)
