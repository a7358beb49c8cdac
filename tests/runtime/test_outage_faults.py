"""The runtime's one classifier of failures (services/runtime/run/outage.py), pinned over every gRPC status code and
every stable reason: which failures may pass (a dependency away, the provider's `transient` flag) and which end the
run; and the backoff and bound the runtime waits with."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from services.runtime.run import outage
from services.runtime.run.outage import Fault, classify, classify_tool
from services.runtime.tools.model import ToolCallStatus
from steward.errors import Reason, StewardError

S = grpc.StatusCode
OUT, P, T = Fault.OUTAGE, Fault.PASSING, Fault.TERMINAL

# Every status code: (the fault on an idempotent call, on one that may not be repeated), with no flag and a reason
# that says nothing more (INTERNAL).
BY_CODE: dict[grpc.StatusCode, tuple[Fault, Fault]] = {
    S.OK: (T, T),
    S.CANCELLED: (T, T),
    S.UNKNOWN: (T, T),
    S.INVALID_ARGUMENT: (T, T),
    S.DEADLINE_EXCEEDED: (OUT, T),
    S.NOT_FOUND: (T, T),
    S.ALREADY_EXISTS: (T, T),
    S.PERMISSION_DENIED: (T, T),
    S.RESOURCE_EXHAUSTED: (T, T),
    S.FAILED_PRECONDITION: (T, T),
    S.ABORTED: (T, T),
    S.OUT_OF_RANGE: (T, T),
    S.UNIMPLEMENTED: (T, T),
    S.INTERNAL: (T, T),
    S.UNAVAILABLE: (OUT, OUT),
    S.DATA_LOSS: (T, T),
    S.UNAUTHENTICATED: (T, T),
}

# Reasons that decide on their own, whatever the code and the flag; every other reason leaves it to them.
TERMINAL_WHATEVER_CODE = {Reason.LEASE_LOST}


def test_the_table_names_every_status_code() -> None:
    assert set(BY_CODE) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_each_status_code(code: grpc.StatusCode) -> None:
    idempotent, once = BY_CODE[code]
    error = StewardError(code, Reason.INTERNAL, "failed")
    assert classify(error, idempotent=True) is idempotent
    assert classify(error, idempotent=False) is once


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_each_reason(reason: Reason) -> None:
    away = StewardError(S.UNAVAILABLE, reason, "away")
    flagged = StewardError(S.UNAVAILABLE, reason, "upstream", metadata={"transient": "true"})
    refused = StewardError(S.FAILED_PRECONDITION, reason, "refused")
    flagged_terminal = StewardError(S.UNAVAILABLE, reason, "upstream", metadata={"transient": "false"})
    expected = (T, T, T, T) if reason in TERMINAL_WHATEVER_CODE else (OUT, P, T, T)
    got = tuple(classify(e, idempotent=True) for e in (away, flagged, refused, flagged_terminal))
    assert got == expected


def test_the_providers_flag_is_its_word_whatever_the_code() -> None:
    # The provider sends its upstream's transient errors as UNAVAILABLE and terminal ones as FAILED_PRECONDITION; the
    # flag, not the code, says which.
    flagged = StewardError(S.FAILED_PRECONDITION, Reason.UPSTREAM_ERROR, "x", metadata={"transient": "true"})
    assert classify(flagged, idempotent=False) is P
    assert P.transient
    assert OUT.transient
    assert not T.transient


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(), OUT),
        (ConnectionResetError(), OUT),
        (BrokenPipeError(), OUT),
        (ValueError("a bug"), T),
        (TimeoutError(), T),  # the first-token limit: a limit, never an outage
    ],
    ids=lambda value: type(value).__name__,
)
def test_errors_of_the_socket_and_others(error: BaseException, expected: Fault) -> None:
    assert classify(error, idempotent=True) is expected


def test_backoff_grows_from_its_start_to_its_cap_with_jitter() -> None:
    for attempt in range(40):
        ceiling = min(outage.BACKOFF_CAP, outage.BACKOFF_START * 2**attempt)
        waits = [outage.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (attempt, waits)
    assert len({outage.backoff(0) for _ in range(50)}) > 1  # jittered


async def test_an_outage_ends_once_it_outlasts_its_bound_and_starts_again_after_an_answer() -> None:
    away = outage.Outage(bound=0.3)
    first = away.next_wait()
    assert first is not None
    assert first <= outage.BACKOFF_START
    deadline = time.monotonic() + 5
    while away.next_wait() is not None:
        assert time.monotonic() < deadline, "the outage never outlasted its bound"
        await asyncio.sleep(0.05)
    away.over()
    assert away.next_wait() is not None


# Every status a tool call can end with: (the fault when repeating the call is safe, when it is not). ADR 0016.
TS = ToolCallStatus
BY_TOOL_STATUS: dict[ToolCallStatus, tuple[Fault, Fault]] = {
    TS.OK: (T, T),
    TS.TOOL_ERROR: (T, T),  # the tool ran and said no: the model reads it
    TS.INVALID_ARGUMENTS: (T, T),
    TS.UNKNOWN_TOOL: (T, T),
    TS.UNAVAILABLE: (OUT, OUT),  # not sent: nothing ran, whatever the tool
    TS.TIMEOUT: (T, T),  # the call's own limit
    TS.CONNECTION_LOST: (OUT, T),  # it may have run: repeated only when a repeat has no further effect
    TS.PROTOCOL_ERROR: (T, T),  # the server's answer
}


def test_the_tool_table_names_every_status() -> None:
    assert set(BY_TOOL_STATUS) == set(ToolCallStatus)


@pytest.mark.parametrize("status", list(ToolCallStatus), ids=str)
def test_each_tool_call_status(status: ToolCallStatus) -> None:
    safe, unsafe = BY_TOOL_STATUS[status]
    assert classify_tool(status, safe_to_repeat=True) is safe
    assert classify_tool(status, safe_to_repeat=False) is unsafe
    if classify_tool(status, safe_to_repeat=False) is OUT:
        assert status.not_run  # an outage of a call that may not be repeated is only one that was never sent
