"""The channel factory: per-method deadlines and retries from gRPC service config.

Each area's service config lives in `service_configs/<area>.json`: every method
has a deadline, and only idempotent methods (reads, and writes keyed by a
request id) are retried, on UNAVAILABLE, with exponential backoff.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import grpc

from steward.auth import TokenSigner
from steward.rpc.client_errors import error_interceptors
from steward.rpc.interceptors import principal_interceptors
from steward.rpc.readiness import Readiness
from steward.rpc.server import MAX_MESSAGE_BYTES

__all__ = ["AREAS", "DEFAULT_READY_WAIT", "create_channel", "service_config"]

AREAS = ("store", "provider", "confirm", "runtime")
# Seconds a call waits for its server to be reachable before it fails UNAVAILABLE: a restart's length (processes
# pass their `reconnect_wait` setting).
DEFAULT_READY_WAIT = 5.0


@cache
def service_config(area: str) -> dict[str, Any]:
    """The gRPC service config for one area's services."""
    if area not in AREAS:
        raise ValueError(f"unknown area {area!r}")
    text = resources.files("steward.rpc").joinpath("service_configs", f"{area}.json").read_text()
    config: dict[str, Any] = json.loads(text)
    return config


def create_channel(
    target: str,
    area: str,
    *,
    signer: TokenSigner | None = None,
    actor: str = "",
    ready_wait: float = DEFAULT_READY_WAIT,
) -> grpc.aio.Channel:
    """A channel to one area's server that attaches the current principal's token to every call, whose calls wait
    up to `ready_wait` seconds for a server that is away (restarting; `steward.rpc.readiness`), and whose failed
    calls raise `StewardError` (see `steward.rpc.client_errors`)."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config(area))),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        # After a server went away, try to connect again at most 2 s apart (gRPC's default grows to 120 s): a call
        # fails at once while the channel waits to reconnect, so a restarted service would otherwise stay
        # unreachable long after it is back.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    # grpc.aio runs a call kind's interceptors in list order, the first outermost: each gets the call details
    # the one before it passed to its continuation. The principal's come first, so the error interceptors (and
    # the call itself) see the details with the token attached; the error interceptors, innermost, are the
    # first to see the call's outcome and turn a failure into `StewardError` on its way out.
    # The readiness wait comes first (outermost): a token is minted, and the call made, once the server is there.
    readiness = Readiness(ready_wait)
    interceptors = readiness.interceptors()
    interceptors += principal_interceptors(signer, actor) if signer is not None else []
    interceptors += error_interceptors(area)
    channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    readiness.bind(channel)
    return channel
