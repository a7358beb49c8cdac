"""The built-in agent's name, shared by the runtime that resolves it and the gateway surfaces that offer it."""

from __future__ import annotations

__all__ = ["DEFAULT_AGENT_NAME"]

# What `CreateRunRequest.agent_name` uses for the built-in default agent (a run with no stored agent): the
# runtime falls back to that agent when the caller has no agent of this name, and the gateway offers it under
# this name (the OpenAI API's model, MCP's default agent).
DEFAULT_AGENT_NAME = "steward"
