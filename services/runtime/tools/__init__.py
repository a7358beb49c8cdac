"""The runtime's tool layer: built-in tools, MCP servers, classification and validation (ADR 0008).

Config (`config`) → connections (`mcp_client.McpClientManager`) → catalogue (`registry.ToolRegistry`)
→ one agent's view (`registry.AgentToolset`): list, validate, call. The loop sees tools only as a `toolbox.Toolbox`
(`registry_toolbox.RegistryToolbox` over the registry) plus the caller's own tools (`client`); nothing here imports the
loop (services/runtime/run/).
"""

from services.runtime.tools.classify import AgentPolicy, Classification, Reason, RunMode, ToolHints, ToolKind, classify
from services.runtime.tools.config import ToolsConfig, ToolsConfigError, Trust, load_config, parse_config
from services.runtime.tools.mcp_client import IDEMPOTENCY_META_KEY, McpClientManager, McpServerConnection
from services.runtime.tools.model import ArgumentError, ToolCallStatus, ToolDefinition, ToolDescriptor, ToolResult
from services.runtime.tools.registry import AgentToolset, ToolRegistry

__all__ = [
    "IDEMPOTENCY_META_KEY",
    "AgentPolicy",
    "AgentToolset",
    "ArgumentError",
    "Classification",
    "McpClientManager",
    "McpServerConnection",
    "Reason",
    "RunMode",
    "ToolCallStatus",
    "ToolDefinition",
    "ToolDescriptor",
    "ToolHints",
    "ToolKind",
    "ToolRegistry",
    "ToolResult",
    "ToolsConfig",
    "ToolsConfigError",
    "Trust",
    "classify",
    "load_config",
    "parse_config",
]
