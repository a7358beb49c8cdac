"""The MCP endpoint at `/mcp`: streamable HTTP through the MCP SDK's own server (ADR 0010).

- `bridge` runs the SDK's ASGI transport inside an aiohttp handler and reports client disconnects;
- `endpoint` mounts it, runs the SDK's session manager in one task for the app's lifetime, and binds
  every MCP request to the caller the gateway's authentication found;
- `hosts` turns the gateway settings into the SDK's DNS-rebinding protection (allowed Host and Origin);
- `metadata` serves RFC 9728 protected-resource metadata and the `/mcp` 401 challenge that points to it;
- `server`, `tools` and `chat` are the tools: list_agents, chat, list_pending_confirmations,
  decide_confirmation, get_run.

This package imports nothing here, so `gateway.auth` can use `gateway.mcp.metadata` without a cycle.
"""
