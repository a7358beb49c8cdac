"""Built-in tools: `time.now` and `calc`, both reads.

`calc` evaluates arithmetic without `eval`: the expression is parsed with `ast`, and only numbers
(int and float literals), parentheses, unary + and -, and + - * / // % ** are accepted. Integer
results are bounded in size and exponents in magnitude, so no expression can exhaust memory or CPU.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.runtime.tools.classify import ToolHints
from services.runtime.tools.config import Trust
from services.runtime.tools.model import Proposal, ToolCallStatus, ToolDefinition, ToolResult

MAX_EXPRESSION_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4096

Number = int | float


class CalcError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalcError(f"result too large (over {MAX_INT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("result is not a finite number")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalcError(f"exponent too large (limit {MAX_EXPONENT})")
    # |base| ** e has at least (bits - 1) * e + 1 bits: refuse before computing anything that large.
    if isinstance(base, int) and isinstance(exponent, int) and (base.bit_length() - 1) * exponent >= MAX_INT_BITS:
        raise CalcError(f"result too large (over {MAX_INT_BITS} bits)")
    if base == 0 and exponent < 0:
        raise CalcError("division by zero")
    result = base**exponent
    if isinstance(result, complex):
        raise CalcError("result is not a real number")
    return result


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _checked(_power(_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        product_bits = left.bit_length() + right.bit_length() if isinstance(left, int) and isinstance(right, int) else 0
        if isinstance(node.op, ast.Mult) and product_bits > MAX_INT_BITS + 1:
            raise CalcError(f"result too large (over {MAX_INT_BITS} bits)")
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalcError("division by zero") from None
        except OverflowError:
            raise CalcError("result is not a finite number") from None
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        what = type(node.op).__name__
    elif isinstance(node, ast.Constant):
        what = f"{type(node.value).__name__} literal"
    else:
        what = type(node).__name__
    raise CalcError(f"not allowed: {what} (only numbers, parentheses and + - * / // % **)")


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression safely. Raises CalcError."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalcError(f"expression too long (limit {MAX_EXPRESSION_LENGTH} characters)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"not an expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError(f"expression too complex (limit {MAX_NODES} nodes)")
    try:
        return _evaluate(tree.body)
    except OverflowError:
        raise CalcError("result is not a finite number") from None


def _format(value: Number) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# The tools.

BuiltinHandler = Callable[[Mapping[str, Any]], ToolResult]
BuiltinProposer = Callable[[Mapping[str, Any]], Proposal]


@dataclass(frozen=True)
class BuiltinTool:
    """A tool run in-process. A write built-in may declare its proposal in code: `propose` makes it from the
    arguments (an exception falls back to the JSON preview), and `definition.proposal` holds its decision schema
    and decision arguments (ProposalSpec; ADR 0017). The shipped built-ins are reads, which are never proposed."""

    definition: ToolDefinition
    handler: BuiltinHandler
    propose: BuiltinProposer | None = None


def _calc(arguments: Mapping[str, Any]) -> ToolResult:
    expression = str(arguments["expression"])
    try:
        value = evaluate(expression)
    except CalcError as exc:
        return ToolResult.failure(ToolCallStatus.TOOL_ERROR, f"cannot evaluate {expression!r}: {exc}")
    return ToolResult(status=ToolCallStatus.OK, text=_format(value), structured={"result": value})


def _now(arguments: Mapping[str, Any]) -> ToolResult:
    name = str(arguments.get("timezone", "UTC"))
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ToolResult.failure(ToolCallStatus.TOOL_ERROR, f"unknown time zone {name!r}: use an IANA name")
    now = datetime.now(UTC).astimezone(zone)
    iso = now.isoformat(timespec="seconds")
    return ToolResult(
        status=ToolCallStatus.OK,
        text=f"{iso} ({name}, {now:%A})",
        structured={"iso": iso, "timezone": name, "unix": int(now.timestamp()), "weekday": f"{now:%A}"},
    )


def _builtin(name: str, description: str, schema: dict[str, Any], handler: BuiltinHandler) -> BuiltinTool:
    definition = ToolDefinition(
        name=name,
        description=description,
        input_schema=schema,
        hints=ToolHints(read_only=True, destructive=False, idempotent=True),
        trust=Trust.TRUSTED,
        server=None,
        remote_name=name,
    )
    return BuiltinTool(definition, handler)


BUILTINS: tuple[BuiltinTool, ...] = (
    _builtin(
        "time.now",
        "The current date and time, in UTC or in the given IANA time zone.",
        {
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "minLength": 1, "maxLength": 64, "description": "e.g. Europe/Paris"}
            },
            "additionalProperties": False,
        },
        _now,
    ),
    _builtin(
        "calc",
        "Evaluate arithmetic: numbers, parentheses, + - * / // % and ** (no names or functions).",
        {
            "type": "object",
            "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_LENGTH}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        _calc,
    ),
)
