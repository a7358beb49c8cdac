"""The tool layer as the loop's Toolbox: the registry of built-in and MCP tools, started from settings."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from services.runtime.agents import AgentSpec
from services.runtime.settings import RuntimeSettings
from services.runtime.tools.classify import AgentPolicy, RunMode, ToolKind
from services.runtime.tools.config import Trust, load_config
from services.runtime.tools.mcp_client import McpClientManager
from services.runtime.tools.model import Proposal, ProposalSpec, ToolCallStatus, ToolDescriptor
from services.runtime.tools.registry import ToolRegistry
from services.runtime.tools.toolbox import Kind, Toolbox, ToolInfo, ToolOutcome, ToolServerInfo
from steward.store.v1 import agent_pb2


def _schema(spec: ProposalSpec | None) -> Mapping[str, Any] | None:
    return None if spec is None else spec.decision_schema


class RegistryToolbox:
    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    async def tools_for(self, agent: AgentSpec, mode: int) -> list[ToolInfo]:
        policy = AgentPolicy(
            mode=RunMode.AUTONOMOUS if mode == agent_pb2.RUN_MODE_AUTONOMOUS else RunMode.INTERACTIVE,
            auto_approve=tuple(agent.auto_approved),
            always_confirm=tuple(agent.always_confirm),
        )
        return [self._info(tool) for tool in self._registry.for_agent(tools=agent.tools, policy=policy).list()]

    def catalogue(self) -> tuple[list[ToolInfo], list[ToolServerInfo]]:
        tools = [self._info(tool) for tool in self._registry.for_agent(tools=("*",), policy=AgentPolicy()).list()]
        manager = self._registry.mcp
        servers = [
            ToolServerInfo(
                name=name,
                trusted=connection.config.trust is Trust.TRUSTED,
                connected=connection.available,
                tool_count=len(connection.tools),
            )
            for name, connection in sorted((manager.servers if manager is not None else {}).items())
        ]
        return tools, servers

    def _info(self, tool: ToolDescriptor) -> ToolInfo:
        schema = _schema(tool.proposal)
        return ToolInfo(
            name=tool.name,
            description=tool.description,
            input_schema_json=json.dumps(tool.input_schema),
            kind=Kind.READ if tool.kind == ToolKind.READ else Kind.WRITE,
            needs_confirmation=tool.needs_confirmation,
            idempotent=tool.idempotent,
            proposes=self._registry.proposes(tool.name),
            decision_schema_json=json.dumps(schema) if schema is not None else "",
            decision_arguments=tool.proposal.decision_arguments if schema is not None and tool.proposal else (),
            destructive=tool.destructive,
            reason=tool.reason.value,
            server=tool.server or "",
        )

    async def propose(
        self, tool: ToolInfo, arguments: dict[str, object], *, time_limit: float
    ) -> Proposal | str | None:
        definition = self._registry.definitions().get(tool.name)
        if definition is None:
            return f"no tool named {tool.name} is available"
        return await self._registry.propose(definition, arguments, timeout=time_limit)

    def validate(self, tool: ToolInfo, arguments: object) -> str | None:
        definition = self._registry.definitions().get(tool.name)
        if definition is None:
            return f"no tool named {tool.name} is available"
        problem = self._registry.validate(definition, arguments)
        return None if problem is None else problem.message

    async def call(self, tool: ToolInfo, arguments: dict[str, object], *, key: str, time_limit: float) -> ToolOutcome:
        definition = self._registry.definitions().get(tool.name)
        if definition is None:
            return ToolOutcome(f"no tool named {tool.name} is available", is_error=True)
        result = await self._registry.execute(definition, arguments, idempotency_key=key, timeout=time_limit)
        return ToolOutcome(
            result.text,
            is_error=result.is_error,
            outcome_unknown=result.status.outcome_unknown,
            timed_out=result.status is ToolCallStatus.TIMEOUT,
            status=result.status,
        )


async def toolbox_from_settings(settings: RuntimeSettings) -> tuple[Toolbox, Callable[[], Awaitable[None]] | None]:
    """The built-in tools, plus the MCP servers of `settings.tools_file` when one is set."""
    if not settings.tools_file:
        return RegistryToolbox(ToolRegistry()), None
    manager = McpClientManager(load_config(Path(settings.tools_file)))
    manager.start()
    # Serve even if a server is slow or down: its tools appear once it connects (each connection retries).
    with anyio.move_on_after(settings.tools_ready_timeout):
        await manager.wait_ready()
    return RegistryToolbox(ToolRegistry(manager)), manager.aclose
