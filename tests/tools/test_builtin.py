"""Built-in tools: the calculator computes arithmetic and refuses everything else; time.now tells the time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from services.runtime.tools.builtin import MAX_EXPRESSION_LENGTH, CalcError, evaluate
from services.runtime.tools.classify import AgentPolicy, ToolKind
from services.runtime.tools.model import ToolCallStatus
from services.runtime.tools.registry import AgentToolset, ToolRegistry


@pytest.fixture
def toolset() -> AgentToolset:
    return ToolRegistry().for_agent(tools=["*"], policy=AgentPolicy())


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) / 4", 0.75),
        ("7 // 2", 3),
        ("-3 % 5", 2),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("+1.5e3 - -2", 1502.0),
        ("2 ** 4095", 2**4095),  # the largest power of two within the 4096-bit bound
    ],
)
def test_calc_computes_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "refusal"),
    [
        ("x + 1", "not allowed: Name"),
        ("__import__('os').system('true')", "not allowed: Call"),
        ("(1).__class__", "not allowed: Attribute"),
        ("().__class__.__bases__[0]", "not allowed: Subscript"),
        ("'a' * 3", "not allowed: str literal"),
        ("True + 1", "not allowed: bool literal"),
        ("1j * 1j", "not allowed: complex literal"),
        ("[1, 2][0]", "not allowed: Subscript"),
        ("lambda: 1", "not allowed: Lambda"),
        ("1 << 5", "not allowed: LShift"),
        ("1 < 2", "not allowed: Compare"),
        ("2 ** 4097", "result too large"),
        ("10 ** 1234", "result too large"),
        ("9 ** 9 ** 9", "exponent too large"),
        ("2 ** 2 ** 2 ** 2 ** 2", "exponent too large"),
        ("(2 ** 4000) * (2 ** 4000)", "result too large"),
        ("2.0 ** 10000", "not a finite number"),
        ("1e308 * 10", "not a finite number"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("1 / 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("1 +", "not an expression"),
        ("-" * 300 + "1", "too complex"),
        ("1" + " + 1" * (MAX_EXPRESSION_LENGTH // 4), "too long"),
    ],
)
def test_calc_refuses_unsafe_or_unbounded_input(expression: str, refusal: str) -> None:
    started = time.monotonic()
    with pytest.raises(CalcError, match=refusal):
        evaluate(expression)
    assert time.monotonic() - started < 0.5  # refused before any large computation


async def test_calc_tool_returns_results_and_tool_errors(toolset: AgentToolset) -> None:
    described = toolset.describe("calc")
    assert described is not None
    assert (described.kind, described.needs_confirmation, described.idempotent) == (ToolKind.READ, False, True)

    ok = await toolset.call("calc", {"expression": "6 * 7"}, idempotency_key=None, timeout=1)
    assert (ok.status, ok.text, ok.structured, ok.is_error) == (ToolCallStatus.OK, "42", {"result": 42}, False)

    refused = await toolset.call("calc", {"expression": "open('/etc/passwd')"}, idempotency_key=None, timeout=1)
    assert refused.status is ToolCallStatus.TOOL_ERROR
    assert refused.is_error
    assert "not allowed: Call" in refused.text

    invalid = await toolset.call("calc", {"expr": "1"}, idempotency_key=None, timeout=1)
    assert invalid.status is ToolCallStatus.INVALID_ARGUMENTS
    assert "'expression' is a required property" in invalid.text


async def test_time_now_in_utc_and_in_a_zone(toolset: AgentToolset) -> None:
    utc = await toolset.call("time.now", {}, idempotency_key=None, timeout=1)
    assert utc.status is ToolCallStatus.OK
    stamp = datetime.fromisoformat(utc.structured["iso"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)

    tokyo = await toolset.call("time.now", {"timezone": "Asia/Tokyo"}, idempotency_key=None, timeout=1)
    assert tokyo.status is ToolCallStatus.OK
    assert datetime.fromisoformat(tokyo.structured["iso"]).utcoffset() == timedelta(hours=9)

    unknown = await toolset.call("time.now", {"timezone": "Mars/Olympus"}, idempotency_key=None, timeout=1)
    assert unknown.status is ToolCallStatus.TOOL_ERROR
    assert "unknown time zone 'Mars/Olympus'" in unknown.text
