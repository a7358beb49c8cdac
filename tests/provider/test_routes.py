"""Model routes as a new user meets them: "provider/model" names work as routes, "auto" takes the first provider
with a key (the caller's or the instance's, such as one from OPENAI_API_KEY), else the demo model."""

from __future__ import annotations

import base64
import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest

from fakes.upstream import FakeUpstream, Reply
from steward.errors import Reason, from_rpc_error
from steward.provider.v1 import key_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1.model_route_pb2 import ModelRoute
from tests.provider.harness import ProviderUnderTest, ask, provider_for, text_of


def _vendor_routes(fake: FakeUpstream, tmp: Path) -> Path:
    """The vendors' own upstream names, served by the fake (what a real deployment reaches at the vendors)."""
    path = tmp / "vendors.json"
    upstreams = {
        "openai": {"protocol": "openai", "base_url": fake.openai_base_url},
        "anthropic": {"protocol": "anthropic", "base_url": fake.anthropic_base_url},
    }
    path.write_text(json.dumps({"upstreams": upstreams}))
    return path


MASTER_KEY = base64.b64encode(b"m" * 32).decode()  # one key store across the restarts of a test


def _provider(fake: FakeUpstream, tmp: Path, **overrides: object) -> AbstractAsyncContextManager[ProviderUnderTest]:
    routes = _vendor_routes(fake, tmp)
    return provider_for(fake, tmp, routes_file=routes, prices_file=None, master_key=MASTER_KEY, **overrides)


async def _routes(provider: ProviderUnderTest, user: tuple[tuple[str, str], ...]) -> dict[str, ModelRoute]:
    reply = await provider.stub.ListModelRoutes(pb.ListModelRoutesRequest(), metadata=user)
    return {r.name: r for r in reply.routes}


async def test_auto_takes_the_first_provider_with_a_key_and_the_environment_key_is_the_instances(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with _provider(fake_upstream, tmp_path) as provider:
        user = provider.user()
        # No key anywhere: "auto" is the demo model, and a real model named directly has no key.
        assert "offline demo model" in text_of(await provider.collect(ask(route="auto"), user))
        routes = await _routes(provider, user)
        assert routes["auto"].selected.provider == "demo"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await provider.collect(ask(route="openai/gpt-4o-mini"), user)
        assert from_rpc_error(raised.value).reason == Reason.MODEL_NOT_FOUND

    async with _provider(fake_upstream, tmp_path, openai_api_key="sk-from-env-aaaaaaaaaaaa") as provider:
        user = provider.user()
        fake_upstream.enqueue(Reply(text="from openai"), Reply(text="direct"))
        assert text_of(await provider.collect(ask(route="auto"), user)) == "from openai"
        assert fake_upstream.requests[-1].headers["authorization"] == "Bearer sk-from-env-aaaaaaaaaaaa"
        assert fake_upstream.requests[-1].body["model"] == "gpt-4o-mini"
        # "provider/model" works as a route, for any model of a known provider.
        assert text_of(await provider.collect(ask(route="openai/gpt-5-mini"), user)) == "direct"
        assert fake_upstream.requests[-1].body["model"] == "gpt-5-mini"
        routes = await _routes(provider, user)
        assert (routes["auto"].selected.provider, routes["auto"].selected_key_scope) == (
            "openai",
            key_pb2.KEY_SCOPE_INSTANCE,
        )
        (key,) = (await provider.stub.ListKeys(pb.ListKeysRequest(), metadata=provider.admin())).keys
        assert (key.provider, key.label, key.last4) == ("openai", "from $OPENAI_API_KEY", "aaaa")
        # The caller's own key for a provider earlier in the list wins over the instance's.
        await provider.stub.PutKey(pb.PutKeyRequest(provider="anthropic", secret="test-key-mine-00000"), metadata=user)
        routes = await _routes(provider, user)
        assert (routes["auto"].selected.provider, routes["auto"].selected_key_scope) == (
            "anthropic",
            key_pb2.KEY_SCOPE_USER,
        )
        other = await _routes(provider, provider.user())
        assert other["auto"].selected.provider == "openai"

    # A changed variable rotates the instance key (same id); an unknown route names what exists.
    async with _provider(fake_upstream, tmp_path, openai_api_key="sk-from-env-bbbbbbbbbbbb") as provider:
        (rotated,) = (await provider.stub.ListKeys(pb.ListKeysRequest(), metadata=provider.admin())).keys
        assert (rotated.id, rotated.last4) == (key.id, "bbbb")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await provider.collect(ask(route="gpt-4o-mini"), provider.user())
        error = from_rpc_error(raised.value)
        assert error.reason == Reason.MODEL_NOT_FOUND
        assert "auto, demo" in error.message
        assert "openai" in error.message


async def test_an_openai_compatible_server_is_one_setting_away(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    async with provider_for(fake_upstream, tmp_path, openai_compatible_base_url=fake_upstream.openai_base_url) as p:
        user = p.user()
        fake_upstream.enqueue(Reply(text="local"))
        assert text_of(await p.collect(ask(route="openai-compatible/llama3.2"), user)) == "local"
        assert fake_upstream.requests[-1].body["model"] == "llama3.2"
        reply = await p.stub.ListModelRoutes(pb.ListModelRoutesRequest(), metadata=user)
        providers = {provider.name: provider for provider in reply.providers}
        assert providers["openai-compatible"].keyless
        assert providers["openai-compatible"].available
        assert not providers["openai"].available
