"""The value types the tool layer hands to the runtime loop: tool descriptions and call results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.runtime.tools.classify import Reason, ToolHints, ToolKind
from services.runtime.tools.config import Trust


class PreviewKind(StrEnum):
    """How a proposal is shown: as plain text, formatted JSON, or a unified diff."""

    TEXT = "text"
    JSON = "json"
    DIFF = "diff"


@dataclass(frozen=True)
class Proposal:
    """What a write will do, shown to the person asked to confirm it (docs/proposals.md)."""

    kind: PreviewKind
    content: str
    title: str = ""
    decision_schema: Mapping[str, Any] | None = None
    """This call's own decision schema (e.g. an enum of its hunks); None keeps the tool's declared one."""


@dataclass(frozen=True)
class ProposalSpec:
    """How a write tool asks to be confirmed, declared in code (built-ins), by the tool's `_meta` (MCP) or by the
    operator's tools config; the operator's wins. Every field is optional; a tool with none gets the default."""

    companion: str | None = None
    """MCP: the server's own name of a read-only tool called with the write's arguments to make the proposal."""
    decision_schema: Mapping[str, Any] | None = None
    """The decision JSON Schema (draft 2020-12, requiring "outcome"); None for the default."""
    decision_arguments: tuple[str, ...] = ()
    """Properties of the decision schema whose values, when approved, become the tool's arguments of that name."""
    title: str = ""
    """Config: the proposal's title, `{name}` replaced by the argument `name`."""
    template: str = ""
    """Config: a text proposal, `{name}` replaced by the argument `name` (used when there is no companion)."""


@dataclass(frozen=True)
class ToolDefinition:
    """A tool as its source declares it, before any agent's policy: built-in or listed by an MCP server."""

    name: str
    """Qualified: "<server>.<tool>" for MCP tools, the built-in's own name otherwise."""
    description: str
    input_schema: Mapping[str, Any]
    hints: ToolHints
    trust: Trust
    server: str | None
    """The MCP server, or None for a built-in."""
    remote_name: str
    """The name the server knows the tool by (the built-in's name for built-ins)."""
    honours_keys: bool = False
    """The server is configured to apply a write once per idempotency key (`idempotency_keys`; trusted only)."""
    proposal: ProposalSpec | None = None
    """How the tool's writes are proposed and decided; None for the default (its arguments as JSON)."""


@dataclass(frozen=True)
class ToolDescriptor:
    """A tool as one agent sees it: what to offer the model, and how its calls are treated."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    kind: ToolKind
    needs_confirmation: bool
    """False for reads, and for writes the agent's policy auto-approves."""
    idempotent: bool
    """After a crash, a started call may be retried with the same idempotency key."""
    destructive: bool
    reason: Reason
    server: str | None
    proposal: ProposalSpec | None = None
    """How its writes are proposed and decided; None for the default."""


class ToolCallStatus(StrEnum):
    """How a call ended. Only `OK` is a success; every other status comes with `is_error`."""

    OK = "ok"
    """The tool ran and succeeded."""
    TOOL_ERROR = "tool_error"
    """The tool ran and reported an error (MCP `isError`): the model can read it and try again."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """Refused before the call: the arguments do not match the tool's input schema. Nothing ran."""
    UNKNOWN_TOOL = "unknown_tool"
    """The agent may not use a tool of that name, or none exists. Nothing ran."""
    UNAVAILABLE = "unavailable"
    """The server could not be reached within the timeout; the call was not sent. Nothing ran."""
    TIMEOUT = "timeout"
    """Sent, but no answer within the timeout. It may still have run (or may still run)."""
    CONNECTION_LOST = "connection_lost"
    """Sent, then the connection broke before the answer. It may have run."""
    PROTOCOL_ERROR = "protocol_error"
    """The server answered with a protocol error or an invalid result. Whether it ran is unknown."""

    @property
    def outcome_unknown(self) -> bool:
        """True when the call may or may not have had its effect: the execution ledger must not assume either."""
        return self in (ToolCallStatus.TIMEOUT, ToolCallStatus.CONNECTION_LOST, ToolCallStatus.PROTOCOL_ERROR)

    @property
    def not_run(self) -> bool:
        """True when the call certainly had no effect, so running it again is safe."""
        return self in (ToolCallStatus.INVALID_ARGUMENTS, ToolCallStatus.UNKNOWN_TOOL, ToolCallStatus.UNAVAILABLE)


@dataclass(frozen=True)
class ToolResult:
    """The result of one call, as a value: the text goes back to the model as a tool_result."""

    status: ToolCallStatus
    text: str
    structured: Any = None
    """The server's structured content (a JSON value), if any."""
    replayed: bool = False
    """The server answered from its idempotency record: this key's effect happened earlier."""

    @property
    def is_error(self) -> bool:
        return self.status is not ToolCallStatus.OK

    @classmethod
    def failure(cls, status: ToolCallStatus, text: str) -> ToolResult:
        return cls(status=status, text=text)


@dataclass(frozen=True)
class ArgumentError:
    """Arguments that do not match a tool's input schema: one line per problem, JSON-pointer located."""

    tool: str
    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return f"invalid arguments for {self.tool}: " + "; ".join(self.problems)
