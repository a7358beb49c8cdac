"""The registry the runtime loop uses: built-in and MCP tools, per agent, validated and classified.

    registry = ToolRegistry(manager)                       # manager: McpClientManager, or None
    tools = registry.for_agent(tools=agent.tools, policy=AgentPolicy(...))
    offered = tools.list()                                 # -> the provider's ToolSpecs, and kind/idempotent
    problem = tools.validate(name, arguments)              # ArgumentError | None
    result = await tools.call(name, arguments, idempotency_key=key, timeout=30.0)

`for_agent` is cheap and reads the live catalogue, so a toolset sees tool-list refreshes. A name
the agent may not use, or that no source offers, is refused as `UNKNOWN_TOOL` without a call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from services.runtime.tools import proposals
from services.runtime.tools.builtin import BUILTINS, BuiltinTool
from services.runtime.tools.classify import AgentPolicy, classify, matches
from services.runtime.tools.mcp_client import McpClientManager
from services.runtime.tools.model import (
    ArgumentError,
    PreviewKind,
    Proposal,
    ToolCallStatus,
    ToolDefinition,
    ToolDescriptor,
    ToolResult,
)

MAX_PROBLEMS = 5


def _pointer(path: Sequence[str | int]) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path)


class ToolRegistry:
    """Every tool the runtime knows: the built-ins and what the MCP servers currently list."""

    def __init__(self, mcp: McpClientManager | None = None, builtins: Sequence[BuiltinTool] = BUILTINS) -> None:
        self._mcp = mcp
        self._builtins = {tool.definition.name: tool for tool in builtins}
        self._validators: dict[str, tuple[ToolDefinition, Validator]] = {}

    @property
    def mcp(self) -> McpClientManager | None:
        """The MCP servers' connections, or None when no tools file is configured."""
        return self._mcp

    def definitions(self) -> dict[str, ToolDefinition]:
        """All tools by qualified name. Built-in names cannot clash: their prefixes are reserved server names."""
        found = {name: tool.definition for name, tool in self._builtins.items()}
        for definition in self._mcp.definitions() if self._mcp is not None else ():
            found.setdefault(definition.name, definition)
        return found

    def for_agent(self, *, tools: Sequence[str], policy: AgentPolicy) -> AgentToolset:
        """The view of one agent: `tools` are qualified names or fnmatch patterns ("notes.*", "*")."""
        return AgentToolset(self, tuple(tools), policy)

    async def refresh(self, server: str | None = None) -> None:
        """List the MCP servers' tools now (one server, or all)."""
        if self._mcp is not None:
            await self._mcp.refresh(server)

    def validate(self, definition: ToolDefinition, arguments: Any) -> ArgumentError | None:
        """Check arguments against the tool's input schema (JSON Schema 2020-12 unless it names another)."""
        cached = self._validators.get(definition.name)
        if cached is None or cached[0] is not definition:
            cls = validator_for(definition.input_schema, default=Draft202012Validator)
            # An empty registry: a reference outside the schema is Unresolvable (jsonschema's default would fetch it).
            validator: Validator = cls(definition.input_schema, format_checker=cls.FORMAT_CHECKER, registry=Registry())
            self._validators[definition.name] = cached = (definition, validator)
        try:
            errors = sorted(
                cached[1].iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message)
            )
        except (Unresolvable, RecursionError):  # a reference outside the schema; arguments nested too deep
            return ArgumentError(definition.name, ("the arguments cannot be checked against the tool's input schema",))
        if not errors:
            return None
        problems = tuple(f"at {_pointer(list(e.absolute_path))}: {e.message}" for e in errors[:MAX_PROBLEMS])
        if len(errors) > MAX_PROBLEMS:
            problems += (f"and {len(errors) - MAX_PROBLEMS} more",)
        return ArgumentError(definition.name, problems)

    async def execute(
        self,
        definition: ToolDefinition,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None,
        timeout: float,  # noqa: ASYNC109 - it decides the result (TIMEOUT vs UNAVAILABLE); no cancellation
    ) -> ToolResult:
        """Run a tool whose arguments are valid. Built-ins run in-process and ignore the key."""
        builtin = self._builtins.get(definition.name)
        if builtin is not None:
            return builtin.handler(arguments)
        if self._mcp is None or definition.server is None or definition.server not in self._mcp.servers:
            return ToolResult.failure(ToolCallStatus.UNKNOWN_TOOL, f"no tool named {definition.name!r}")
        connection = self._mcp.servers[definition.server]
        return await connection.call(
            definition.remote_name, arguments, idempotency_key=idempotency_key, timeout=timeout
        )

    def proposes(self, name: str) -> bool:
        """The tool's proposal is made (by its code, a companion or a template), not its arguments shown."""
        builtin = self._builtins.get(name)
        if builtin is not None:
            return builtin.propose is not None
        spec = self.definitions()[name].proposal if name in self.definitions() else None
        return spec is not None and (spec.companion is not None or bool(spec.template))

    async def propose(
        self,
        definition: ToolDefinition,
        arguments: Mapping[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 - a companion's call is bounded like any other
    ) -> Proposal | str | None:
        """The proposal of a write with valid arguments (ADR 0017): from its built-in's code, its companion tool or
        the operator's text template; why it could not be made (the caller falls back to the JSON preview); or None
        when the tool declares no proposal."""
        spec = definition.proposal
        builtin = self._builtins.get(definition.name)
        made: Proposal | str | None = None
        if builtin is not None and builtin.propose is not None:
            try:
                made = builtin.propose(arguments)
            except Exception as exc:  # noqa: BLE001 - a proposer's failure must not block the question
                made = f"the proposal failed: {type(exc).__name__}: {exc}"[:300]
        elif spec is not None and spec.companion is not None:
            if self._mcp is None or definition.server is None or definition.server not in self._mcp.servers:
                return f"MCP server {definition.server!r} is not configured"
            connection = self._mcp.servers[definition.server]
            result = await connection.call(spec.companion, arguments, idempotency_key=None, timeout=timeout)
            made = proposals.from_result(result, definition.name)
        elif spec is not None and spec.template:
            made = Proposal(kind=PreviewKind.TEXT, content=proposals.render(spec.template, arguments))
        if isinstance(made, Proposal) and not made.title and spec is not None and spec.title:
            made = dataclasses.replace(made, title=proposals.render(spec.title, arguments)[: proposals.MAX_TITLE])
        return made


class AgentToolset:
    """The tools one agent may use, classified by its policy."""

    def __init__(self, registry: ToolRegistry, allowed: tuple[str, ...], policy: AgentPolicy) -> None:
        self._registry = registry
        self._allowed = allowed
        self.policy = policy

    def _definition(self, name: str) -> ToolDefinition | None:
        if not matches(name, self._allowed):
            return None
        return self._registry.definitions().get(name)

    def _describe(self, definition: ToolDefinition) -> ToolDescriptor:
        decision = classify(
            definition.name, definition.hints, definition.trust, self.policy, honours_keys=definition.honours_keys
        )
        return ToolDescriptor(
            name=definition.name,
            description=definition.description,
            input_schema=definition.input_schema,
            kind=decision.kind,
            needs_confirmation=decision.needs_confirmation,
            idempotent=decision.idempotent,
            destructive=decision.destructive,
            reason=decision.reason,
            server=definition.server,
            proposal=definition.proposal,
        )

    def list(self) -> list[ToolDescriptor]:
        """The tools to offer the model, sorted by name."""
        definitions = self._registry.definitions()
        return [self._describe(definitions[name]) for name in sorted(definitions) if matches(name, self._allowed)]

    def describe(self, name: str) -> ToolDescriptor | None:
        definition = self._definition(name)
        return None if definition is None else self._describe(definition)

    def validate(self, name: str, arguments: Any) -> ArgumentError | None:
        """None when `arguments` fit the tool's input schema; otherwise every problem (at most 5), located."""
        definition = self._definition(name)
        if definition is None:
            return ArgumentError(name, ("no tool of that name is available to this agent",))
        return self._registry.validate(definition, arguments)

    async def call(
        self,
        name: str,
        arguments: Any,
        *,
        idempotency_key: str | None,
        timeout: float,  # noqa: ASYNC109 - it decides the result (TIMEOUT vs UNAVAILABLE); no cancellation
    ) -> ToolResult:
        """Validate, then call. Never raises for what the tool or its server does; see ToolCallStatus.

        The runtime decides before calling whether the call needs confirmation (`describe(name)`);
        this method runs it. `idempotency_key` (e.g. the confirmation id) reaches MCP servers in
        `_meta["steward/idempotency_key"]`.
        """
        definition = self._definition(name)
        if definition is None:
            return ToolResult.failure(ToolCallStatus.UNKNOWN_TOOL, f"no tool named {name!r} is available")
        problem = self._registry.validate(definition, arguments)
        if problem is not None:
            return ToolResult.failure(ToolCallStatus.INVALID_ARGUMENTS, problem.message)
        return await self._registry.execute(definition, arguments, idempotency_key=idempotency_key, timeout=timeout)
