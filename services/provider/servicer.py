"""ProviderService: normalized generation. Keys, real adapters, metering and
budgets arrive with the provider issue; until then those RPCs answer
UNIMPLEMENTED / NOT_IMPLEMENTED and only the offline demo model exists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.provider import demo
from steward.auth import current_principal
from steward.errors import invalid_argument, not_found
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_MESSAGES = 10_000
MAX_OUTPUT_TOKENS = 200_000


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    def __init__(self, demo_token_interval: float) -> None:
        self._demo_token_interval = demo_token_interval

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> AsyncIterator[pb.GenerateResponse]:
        current_principal()
        if not request.messages:
            raise invalid_argument("messages", "messages must not be empty")
        if len(request.messages) > MAX_MESSAGES:
            raise invalid_argument("messages", f"at most {MAX_MESSAGES} messages")
        if not 0 <= request.max_tokens <= MAX_OUTPUT_TOKENS:
            raise invalid_argument("max_tokens", f"max_tokens must be 0..{MAX_OUTPUT_TOKENS}")
        target = request.WhichOneof("target")
        if target is None:
            raise invalid_argument("target", "a route or a model is required")
        wanted = request.route if target == "route" else request.model
        if wanted not in (demo.ROUTE, demo.MODEL_NAME):
            raise not_found("MODEL_NOT_FOUND", f"no {target} named {wanted!r} is configured")
        async for chunk in demo.generate(request, self._demo_token_interval):
            yield chunk

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        current_principal()
        return pb.ListModelsResponse(models=[demo.model()])

    async def ListModelRoutes(self, request: pb.ListModelRoutesRequest, context: Context) -> pb.ListModelRoutesResponse:
        current_principal()
        return pb.ListModelRoutesResponse(routes=[demo.route()])
