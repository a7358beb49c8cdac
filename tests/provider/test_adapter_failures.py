"""The real provider adapters against a misbehaving fake upstream: typed failures, and the pieces they use."""

from __future__ import annotations

import time

import pytest

from fakes.script import Behavior, Cut, Fail, Malformed, Reply, Stall, StreamError
from fakes.upstream import FakeUpstream
from services.provider.adapters.base import UpstreamError
from services.provider.adapters.errors import retry_after_seconds
from services.provider.adapters.names import ToolNames, decode_tool_name
from services.provider.adapters.openai_adapter import ChunkTranslator
from tests.provider.adapter_env import (
    KEY,
    PROTOCOLS,
    Env,
    Protocol,
    kinds,
    run,
    simple_call,
    texts,
)

# -- failures --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "case",
    [
        (Fail(429, retry_after=2, message=f"slow down, {KEY}"), "RATE_LIMITED", True, 2.0),
        (Fail(529), "RATE_LIMITED", True, None),
        (Fail(500, message=f"boom for {KEY}"), "SERVER_ERROR", True, None),
        (Fail(503, retry_after=1.5), "SERVER_ERROR", True, 1.5),
        (Fail(401, message=f"invalid x-api-key {KEY}"), "AUTHENTICATION", False, None),
        (Fail(403), "AUTHENTICATION", False, None),
        (Fail(400, message=f"bad request {KEY}"), "BAD_REQUEST", False, None),
        (Fail(404, message="model: not-a-model"), "BAD_REQUEST", False, None),
    ],
    ids=lambda case: str(case[0].status),
)
async def test_http_failures(env: Env, protocol: Protocol, case: tuple[Fail, str, bool, float | None]) -> None:
    fail, reason, transient, retry_after = case
    events, error = await env.scripted(protocol, fail)
    assert events == []
    assert error is not None
    assert (error.reason, error.transient) == (reason, transient)
    assert (error.retry_after, error.status) == (retry_after, fail.status)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("after_chunks", [0, 3])
async def test_stall_times_out(env: Env, protocol: Protocol, after_chunks: int) -> None:
    began = time.monotonic()
    events, error = await env.scripted(protocol, Stall(seconds=5, after_chunks=after_chunks), read_timeout=0.5)
    assert time.monotonic() - began < 3
    assert error is not None
    assert (error.reason, error.transient) == ("TIMEOUT", True)
    assert "finished" not in kinds(events)
    assert bool(events) == (after_chunks > 0), "what came before the stall was yielded"


@pytest.mark.parametrize("protocol", PROTOCOLS)
# Chunks 10 ms apart, so that those before the break are read before it (a transport may drop what it buffered when
# the connection breaks under it).
@pytest.mark.parametrize(
    "behavior",
    [
        Cut(2, then=Reply(chunk_delay=0.01)),
        Cut(4, then=Reply(text="one two three four", chunk_delay=0.01)),
        Malformed(2, then=Reply(chunk_delay=0.01)),
    ],
    ids=repr,
)
async def test_broken_stream(env: Env, protocol: Protocol, behavior: Behavior) -> None:
    events, error = await env.scripted(protocol, behavior)
    assert events, "the events before the break were yielded"
    assert "finished" not in kinds(events)
    assert error is not None
    assert error.transient
    expected = {"MALFORMED_RESPONSE", "STREAM_CUT"} if isinstance(behavior, Malformed) else {"STREAM_CUT", "CONNECTION"}
    assert error.reason in expected
    if isinstance(behavior, Cut) and behavior.after_chunks == 4:
        assert texts(events).startswith("one ")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("status", "reason", "transient"),
    [(429, "RATE_LIMITED", True), (500, "SERVER_ERROR", True), (400, "BAD_REQUEST", False)],
)
async def test_an_error_inside_the_stream_is_typed_by_its_error_type(
    env: Env, protocol: Protocol, status: int, reason: str, transient: bool
) -> None:
    # The error event names the key (as a careless upstream might): it must not reach our error.
    behavior = StreamError(5, status=status, message=f"failed for key {KEY}", then=Reply(chunk_delay=0.01))
    events, error = await env.scripted(protocol, behavior)
    assert error is not None
    assert (error.reason, error.transient) == (reason, transient)
    assert KEY not in error.message
    assert "finished" not in kinds(events)
    assert texts(events).startswith("Hello ")  # what came before the error was delivered


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connection_refused(env: Env, protocol: Protocol) -> None:
    fake = FakeUpstream()
    await fake.start()
    upstream = Env(fake).upstream(protocol)
    await fake.stop()  # nothing listens on that port any more
    _, error = await run(env.adapter(protocol), upstream, simple_call())
    assert error is not None
    assert (error.reason, error.transient) == ("CONNECTION", True)


# -- pieces ----------------------------------------------------------------------------------------------------------


def test_tool_names_round_trip() -> None:
    qualified = ["notes.create", "a.b", "a__b", "ünï.cödé", "x." + "y" * 80]
    names = ToolNames(qualified)
    wires = [names.wire(name) for name in qualified]
    assert wires[0] == "notes__create"
    assert len(set(wires)) == len(wires), "distinct tools keep distinct wire names"
    assert all(1 <= len(w) <= 64 and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in w) for w in wires)
    assert [names.name(wire) for wire in wires] == qualified
    assert decode_tool_name("other__tool") == names.name("other__tool") == "other.tool"


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, now=now) == pytest.approx(10.0)
    assert retry_after_seconds({"retry-after": "Tue, 14 Nov 2020 22:13:30 GMT"}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_openai_stream_without_finish_reason_is_cut() -> None:
    with pytest.raises(UpstreamError) as raised:
        ChunkTranslator(ToolNames([])).finish()
    assert (raised.value.reason, raised.value.transient) == ("STREAM_CUT", True)
