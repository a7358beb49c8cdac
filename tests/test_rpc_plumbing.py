"""The shared gRPC plumbing: graceful shutdown order and the per-method call policy."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.confirm.server import create_server as create_confirm
from steward.rpc.channels import AREAS, service_config
from steward.settings import CommonSettings
from tests.support.grpc_helpers import all_services

# Methods the channel may retry: reads, and writes that are idempotent by contract.
IDEMPOTENT_PREFIXES = (
    "Get",
    "List",
    "Delete",
    "Revoke",
    "Cancel",
    "Acknowledge",
    "Summarize",
    "Set",
    "RequestRun",
    "Verify",
)


async def test_stop_flips_health_to_not_serving_before_the_server_goes(tmp_path: Path) -> None:
    settings = CommonSettings.model_validate({"internal_secret": secrets.token_urlsafe(32), "data_dir": tmp_path})
    server = await create_confirm(settings, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        statuses = []
        async for reply in watch:
            statuses.append(reply.status)
            if len(statuses) == 1:
                stopping = asyncio.create_task(server.stop(2))
            else:
                break
        await asyncio.wait_for(stopping, 10)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def _policy(area: str, service: str, method: str) -> dict[str, object]:
    """The methodConfig gRPC applies to a method: the method entry, else the service entry."""
    configs = service_config(area)["methodConfig"]
    for want in ({"service": service, "method": method}, {"service": service}):
        for config in configs:
            if want in config["name"]:
                return dict(config)
    raise AssertionError(f"{service}/{method} has no methodConfig")


@pytest.mark.parametrize("area", AREAS)
def test_every_method_has_a_deadline_and_only_idempotent_ones_retry(area: str) -> None:
    methods = [(s.full_name, m.name) for a, s in all_services() if a == area for m in s.methods]
    assert methods
    for service, method in methods:
        policy = _policy(area, service, method)
        assert str(policy.get("timeout", "")).endswith("s"), f"{service}/{method} has no deadline"
        if "retryPolicy" in policy:
            assert method.startswith(IDEMPOTENT_PREFIXES), f"{service}/{method} is retried but not idempotent"
            assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]  # type: ignore[index]
