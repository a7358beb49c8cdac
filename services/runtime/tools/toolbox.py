"""What the loop needs from tools: the catalogue an agent may use, and calls.

The rest of this package (MCP servers, built-ins, classification) implements `Toolbox`
(registry_toolbox.RegistryToolbox); the loop depends on nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from services.runtime.tools.model import Proposal, ToolCallStatus

if TYPE_CHECKING:
    from services.runtime.agents import AgentSpec


class Kind(Enum):
    READ = "read"  # runs at once, several in parallel
    WRITE = "write"  # changes something
    CLIENT = "client"  # the caller runs it: the run pauses until SubmitToolResults


CLIENT_PREFIX = "client."


@dataclass(frozen=True)
class ToolInfo:
    name: str  # qualified: "server.tool"
    description: str
    input_schema_json: str
    kind: Kind
    needs_confirmation: bool  # a person must approve each call (writes, unless the agent's policy lets them through)
    idempotent: bool = False  # a repeated call with the same key has no further effect
    proposes: bool = False  # a write whose proposal is made (Toolbox.propose) rather than its arguments shown
    decision_schema_json: str = ""  # the tool's decision JSON Schema; "" for the default
    decision_arguments: tuple[str, ...] = ()  # decision properties that become arguments when approved
    destructive: bool = False  # a write that may destroy or overwrite something
    reason: str = ""  # why it is classified so (classify.Reason's value; "client" for client tools)
    server: str = ""  # the MCP server that offers it; "" for built-in and client tools


@dataclass(frozen=True)
class ToolServerInfo:
    """One configured MCP server as this replica sees it."""

    name: str
    trusted: bool
    connected: bool  # a session is up now
    tool_count: int  # its last tool list's length (kept while it is down)


@dataclass(frozen=True)
class ToolOutcome:
    content: str  # what the model reads back
    is_error: bool = False
    outcome_unknown: bool = False  # sent, but whether it took effect cannot be told (timeout, broken connection)
    timed_out: bool = False  # sent, and no answer within the tool timeout (a limit: a read that times out ends the run)
    status: ToolCallStatus | None = None  # how the tool layer says the call ended; None for results the loop made


class Toolbox(Protocol):
    async def tools_for(self, agent: AgentSpec, mode: int) -> list[ToolInfo]:
        """The tools the agent may use, classified under its policy and the run's mode."""
        ...

    def validate(self, tool: ToolInfo, arguments: object) -> str | None:
        """Why `arguments` do not fit the tool's input schema (a sentence naming the tool); None when they do."""
        ...

    async def call(self, tool: ToolInfo, arguments: dict[str, object], *, key: str, time_limit: float) -> ToolOutcome:
        """Call a tool once; `key` is its idempotency key. Failures are outcomes, never exceptions."""
        ...

    async def propose(
        self, tool: ToolInfo, arguments: dict[str, object], *, time_limit: float
    ) -> Proposal | str | None:
        """The proposal of a write that `proposes` (ADR 0017); why it could not be made; None for the default."""
        ...

    def catalogue(self) -> tuple[list[ToolInfo], list[ToolServerInfo]]:
        """Every tool known, classified without any agent's policy, and the MCP servers (not the loop's: the
        runtime service's ListToolCatalog)."""
        ...
