"""The aiohttp gateway: authenticated HTTP, SSE and (later) OpenAI-compatible and MCP surfaces."""
