"""The MCP endpoint at `/mcp`: streamable HTTP through the MCP SDK's own server (ADR 0010).

- `bridge` runs the SDK's ASGI transport inside an aiohttp handler and reports client disconnects;
- `endpoint` mounts it, runs the SDK's session manager in one task for the app's lifetime, and binds
  every MCP request to the caller the gateway's authentication found;
- `sessions` counts each user's open sessions and holds them to `mcp_max_sessions_per_user`;
- `hosts` turns the gateway settings into the SDK's DNS-rebinding protection (allowed Host and Origin);
- `metadata` serves RFC 9728 protected-resource metadata and the `/mcp` 401 challenge that points to it;
- `server` is the SDK's low-level server with the tools, and shapes their results;
- `tooling` is what every tool is made of (its arguments, the call, its answer, its errors);
- `read_tools` are list_agents, list_pending_confirmations and get_run; `action_tools` are chat and
  decide_confirmation; `run_outcomes` reads a run's log into their answers (and progress notifications).

`endpoint.install` registers `/mcp`'s metadata documents as public paths and `metadata.challenge` as `/mcp`'s 401
challenge (`gateway.app_keys.ACCESS`), so authentication imports nothing of MCP.
"""
