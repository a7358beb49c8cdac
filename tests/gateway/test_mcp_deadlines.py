"""Every service call an MCP tool makes has the gateway's `upstream_timeout` deadline: against services that
take calls and never answer, every tool answers a DEADLINE_EXCEEDED tool error (instead of hanging)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from tests.support.mcp_client import MODERN, mcp_client, refused, serving
from tests.support.stack import Stack

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@asynccontextmanager
async def silent_services() -> AsyncIterator[str]:
    """A gRPC server that takes every call and never answers: its address."""

    async def never(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.sleep(3600)
        return b""

    class Silent(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
            return grpc.unary_unary_rpc_method_handler(never)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Silent(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_every_service_call_of_a_tool_has_the_upstream_deadline(stack: Stack) -> None:
    async with silent_services() as silent:
        addresses = {f"{name}_address": silent for name in ("store", "confirm", "runtime", "provider")}
        settings = stack.gateway_settings(upstream_timeout=0.3, **addresses)
        async with serving(settings) as (_runner, base), mcp_client(f"{base}/mcp", stack.dev_token, MODERN) as client:
            for tool, arguments in [
                ("list_agents", {}),
                ("list_pending_confirmations", {}),
                ("get_run", {"run_id": UNKNOWN}),
                ("chat", {"message": "Hello"}),
                ("decide_confirmation", {"confirmation_id": UNKNOWN, "outcome": "approve"}),
            ]:
                async with asyncio.timeout(5):  # well before the channels' own 10 s deadlines would end it
                    assert refused(await client.call_tool(tool, arguments)) == "DEADLINE_EXCEEDED", tool
