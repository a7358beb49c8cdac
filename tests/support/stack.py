"""An in-process Steward stack: every service's real `create_server` on an ephemeral port."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gateway.settings import GatewaySettings
from services.confirm.server import create_server as create_confirm
from services.confirm.settings import ConfirmSettings
from services.provider.server import create_server as create_provider
from services.provider.settings import ProviderSettings
from services.runtime.hooks import Hook
from services.runtime.server import create_server as create_runtime
from services.runtime.settings import RuntimeSettings
from services.store.server import create_server as create_store
from services.store.settings import StoreSettings
from steward.auth import METADATA_KEY, SERVICE_PREFIX, TokenSigner
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.confirm.v1 import confirmation_pb2
from steward.rpc.server import GrpcServer
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc


@dataclass
class Stack:
    """The running services and the settings a gateway needs to reach them."""

    secret: str
    dev_token: str
    store: GrpcServer
    provider: GrpcServer
    confirm: GrpcServer
    runtime: GrpcServer
    data_dir: Path
    # How to start each service again (by its field name) on a given address, with the settings it first had.
    starters: dict[str, Callable[[str], Awaitable[GrpcServer]]] = field(default_factory=dict)

    def address(self, server: GrpcServer) -> str:
        return f"127.0.0.1:{server.port}"

    async def outage(self, name: str, seconds: float) -> None:
        """Stop a service at once (its calls in flight are cut off, new ones refused), and start it again on the
        same port, with the same settings and data, `seconds` later."""
        port = await self.stop_service(name)
        await asyncio.sleep(seconds)  # the outage itself
        await self.start_service(name, port)

    async def stop_service(self, name: str) -> int:
        """Stop a service (by its field name) at once; the port it served on."""
        server: GrpcServer = getattr(self, name)
        await server.stop(0)
        return server.port

    async def start_service(self, name: str, port: int) -> None:
        """Start a stopped service again on `port`, with the settings and data it had."""
        setattr(self, name, await self.starters[name](f"127.0.0.1:{port}"))

    def gateway_settings(self, **overrides: object) -> GatewaySettings:
        values: dict[str, object] = {
            "internal_secret": self.secret,
            "dev_token": self.dev_token,
            "data_dir": self.data_dir,
            "store_address": self.address(self.store),
            "provider_address": self.address(self.provider),
            "confirm_address": self.address(self.confirm),
            "runtime_address": self.address(self.runtime),
            "log_json": False,
            "rate_limit_per_second": 0,  # tests make requests as fast as they can; gateway/test_limits.py sets one
        }
        values.update(overrides)
        return GatewaySettings.model_validate(values)


@asynccontextmanager
async def running_stack(
    data_dir: Path,
    *,
    demo_token_interval: float = 0.001,
    runtime: dict[str, object] | None = None,
    provider: dict[str, object] | None = None,
    hooks: Sequence[Hook] = (),
) -> AsyncIterator[Stack]:
    """Start store, provider, confirm and runtime in this process; stop them afterwards. `runtime` overrides
    runtime settings (tools_file, confirmation_ttl, ...), `provider` provider settings (key_store, routes_file,
    ...); `hooks` are the runtime's plugins."""
    secret = secrets.token_urlsafe(32)
    base: dict[str, object] = {"internal_secret": secret, "data_dir": data_dir, "log_json": False}
    store_settings = StoreSettings.model_validate(
        {**base, "token_pepper": secrets.token_urlsafe(32), "retention_interval": 0}
    )
    provider_settings = ProviderSettings.model_validate(
        {
            **base,
            "demo_token_interval": demo_token_interval,
            "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            **(provider or {}),
        }
    )
    confirm_settings = ConfirmSettings.model_validate(base)
    store = await create_store(store_settings, "127.0.0.1:0")
    provider_server = await create_provider(provider_settings, "127.0.0.1:0")
    confirm = await create_confirm(confirm_settings, "127.0.0.1:0")
    runtime_server = await create_runtime(
        RuntimeSettings.model_validate(
            {
                **base,
                "store_address": f"127.0.0.1:{store.port}",
                "provider_address": f"127.0.0.1:{provider_server.port}",
                "confirm_address": f"127.0.0.1:{confirm.port}",
                **(runtime or {}),
            }
        ),
        "127.0.0.1:0",
        hooks=hooks,
    )
    starters: dict[str, Callable[[str], Awaitable[GrpcServer]]] = {
        "store": lambda address: create_store(store_settings, address),
        "provider": lambda address: create_provider(provider_settings, address),
        "confirm": lambda address: create_confirm(confirm_settings, address),
    }
    stack = Stack(
        secret, secrets.token_urlsafe(24), store, provider_server, confirm, runtime_server, data_dir, starters
    )
    try:
        yield stack
    finally:
        # The stack's own servers: a service restarted by `outage` is the one stopped, not the one it replaced.
        for server in (stack.runtime, stack.confirm, stack.provider, stack.store):
            await server.stop(0.5)


async def store_user_token(stack: Stack, scopes: tuple[str, ...] = ()) -> str:
    """The text of a token of a brand-new store user, made directly in the store."""
    signer = TokenSigner(stack.secret, issuer="tests")
    async with grpc.aio.insecure_channel(stack.address(stack.store)) as channel:
        identity = store_grpc.IdentityServiceStub(channel)
        user = await identity.CreateUser(
            store_pb.CreateUserRequest(display_name="other"),
            metadata=((METADATA_KEY, signer.mint(f"{SERVICE_PREFIX}tests")),),
        )
        reply = await identity.CreateApiToken(
            store_pb.CreateApiTokenRequest(label="theirs", scopes=list(scopes)),
            metadata=((METADATA_KEY, signer.mint(user.user.id)),),
        )
    return reply.secret


async def runtime_confirmation(
    stack: Stack, *, user: str = "dev-user", ttl_seconds: int = 0
) -> confirmation_pb2.Confirmation:
    """A pending write confirmation of `user`'s, made as the runtime makes one (CreateConfirmation as the runtime
    acting for the user) on the real confirm service."""
    token = TokenSigner(stack.secret, issuer="tests").mint(user, actor="runtime")
    async with grpc.aio.insecure_channel(stack.address(stack.confirm)) as channel:
        request = confirm_pb.CreateConfirmationRequest(
            request_id=uuid.uuid4().hex,
            run_id=str(uuid.uuid4()),
            conversation_id=str(uuid.uuid4()),
            tool_call_id="call_1",
            tool_name="notes.create_note",
            arguments_json=json.dumps({"title": "Groceries"}),
            preview=confirmation_pb2.Preview(kind=confirmation_pb2.PREVIEW_KIND_JSON, content='{"title": "Groceries"}'),
            kind=confirmation_pb2.CONFIRMATION_KIND_TOOL_WRITE,
            lease_epoch=1,
        )
        if ttl_seconds:
            request.ttl.seconds = ttl_seconds
        reply = await confirm_grpc.ConfirmationServiceStub(channel).CreateConfirmation(
            request, metadata=((METADATA_KEY, token),)
        )
    return reply.confirmation
