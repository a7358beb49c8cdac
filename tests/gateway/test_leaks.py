"""The detector of what an error text must never show a client (gateway/leaks.py): each forbidden kind is found,
and the texts Steward writes for clients pass."""

from __future__ import annotations

import pytest

from gateway.leaks import leak


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:50051: refused", "a gRPC address"),
        ("ipv6:[::1]:50051: Connection refused", "a gRPC address"),
        ("unix:/run/steward/store.sock: No such file", "a gRPC address"),
        ("<AioRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE>", "a gRPC status"),
        ('{"grpc_status":14, "grpc_message":"Socket closed"}', "a gRPC status"),
        ("could not reach 127.0.0.1", "an IP address"),
        ("could not reach localhost", "a loopback host"),
        ("store:50051 refused the connection", "a port"),
        ("Traceback (most recent call last):", "a stack trace"),
        ('  File "gateway/app.py", line 3, in create_app', "a stack trace"),
        ("no such file /work/main/data/store.db", "a file path"),
        ("failed in services/store/server.py", "a file path"),
    ],
)
def test_a_leaking_text_is_found(text: str, kind: str) -> None:
    found = leak(text)
    assert found is not None
    assert found.kind == kind, found
    assert found.fragment in text


@pytest.mark.parametrize(
    "text",
    [
        "the store service is unavailable; try again later",
        "a service Steward depends on did not answer in time",
        "run 6f1c0d7e-4b7a-4d1e-9a55-2f0c3a1b9e10 was not found",
        "the confirmation expired at 2026-12-07T10:30:00Z",
        "page_size: must be at most 500",
        "too many requests; try again later",
        "this call may cost up to 1200 micro-dollars; the user budget has 0 left",
        "",
    ],
)
def test_a_text_written_for_clients_passes(text: str) -> None:
    assert leak(text) is None
