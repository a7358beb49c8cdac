"""A provider service under test: the real server, routed to a fake upstream."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fakes.upstream import FakeUpstream
from services.provider.server import create_server
from services.provider.settings import ProviderSettings
from steward.auth import SERVICE_PREFIX
from steward.common.v1 import content_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc
from steward.rpc.server import GrpcServer
from tests.support.grpc_helpers import principal_metadata

Metadata = tuple[tuple[str, str], ...]
ANTHROPIC_MODEL = "fake-anthropic/claude-test"
OPENAI_MODEL = "fake-openai/gpt-test"
# Dollars per million tokens: input 1, output 2 => 1 micro-dollar per input token, 2 per output token.
PRICES = {ANTHROPIC_MODEL: {"input": 1.0, "output": 2.0}, OPENAI_MODEL: {"input": 1.0, "output": 2.0}}


@dataclass
class ProviderUnderTest:
    server: GrpcServer
    channel: grpc.aio.Channel
    secret: str
    settings: ProviderSettings

    @property
    def stub(self) -> pb_grpc.ProviderServiceAsyncStub:
        return pb_grpc.ProviderServiceStub(self.channel)

    def user(self, name: str = "") -> Metadata:
        return principal_metadata(self.secret, name or f"user-{uuid.uuid4().hex}")

    def admin(self) -> Metadata:
        return principal_metadata(self.secret, f"{SERVICE_PREFIX}cli")

    async def collect(self, request: pb.GenerateRequest, user: Metadata) -> list[pb.GenerateResponse]:
        return [event async for event in self.stub.Generate(request, metadata=user)]


def ask(text: str = "hello", *, route: str = "", model: str = "", **fields: Any) -> pb.GenerateRequest:
    message = content_pb2.ChatMessage(
        role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text))]
    )
    request = pb.GenerateRequest(messages=[message], request_id=uuid.uuid4().hex, **fields)
    if route:
        request.route = route
    else:
        request.model = model or ANTHROPIC_MODEL
    return request


def text_of(events: list[pb.GenerateResponse]) -> str:
    return "".join(e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta")


@asynccontextmanager
async def provider_for(fake: FakeUpstream, tmp: Path, **overrides: object) -> AsyncIterator[ProviderUnderTest]:
    routes = {
        "upstreams": {
            "fake-anthropic": {"protocol": "anthropic", "base_url": fake.anthropic_base_url},
            "fake-openai": {"protocol": "openai", "base_url": fake.openai_base_url},
        },
        "routes": {"smart": {"description": "test route", "primary": ANTHROPIC_MODEL, "fallbacks": [OPENAI_MODEL]}},
    }
    (tmp / "routes.json").write_text(json.dumps(routes))
    (tmp / "prices.json").write_text(json.dumps(PRICES))
    secret = secrets.token_urlsafe(32)
    values: dict[str, object] = {
        "internal_secret": secret,
        "data_dir": tmp,
        "log_json": False,
        "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "routes_file": tmp / "routes.json",
        "prices_file": tmp / "prices.json",
        "retry_base_delay": 0.001,
        "retry_max_delay": 0.01,
        "first_token_timeout": 2.0,
        "idle_timeout": 2.0,
        "breaker_failures": 100,
    }
    values.update(overrides)
    settings = ProviderSettings.model_validate(values)
    server = await create_server(settings, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield ProviderUnderTest(server, channel, secret, settings)
    finally:
        await channel.close()
        await server.stop(0.5)
