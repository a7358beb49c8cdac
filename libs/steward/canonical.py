"""Strict JSON parsing and canonical JSON (RFC 8785, the JSON Canonicalization Scheme).

`arguments_hash` is the lowercase hex SHA-256 of the UTF-8 bytes of the canonical form:

- objects: members sorted by their names compared as UTF-16 code units, no whitespace;
- strings: only `"`, `\\` and the controls U+0000..U+001F are escaped (`\\b \\t \\n \\f \\r`,
  else `\\u00xx` in lowercase hex); everything else, U+2028 and U+007F included, is literal;
- numbers: IEEE 754 doubles printed as ECMAScript's Number.prototype.toString does (the shortest
  digits that round-trip; `1e+21`, `0.000001`, `1e-7`, `-0` as `0`). Integers are doubles too,
  so two integers above 2**53 that round to the same double have the same hash;
- literals `null`, `true`, `false`; arrays keep their order.

Input is I-JSON (RFC 7493): duplicate member names, NaN and infinities (including numbers too
large for a double), and lone surrogates are refused with ValueError.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

__all__ = ["arguments_hash", "canonical", "canonical_json", "parse", "sha256_hex"]


def parse(text: str) -> Any:
    """The value of JSON `text`; ValueError when it is not strict I-JSON (see the module docstring)."""
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)
    except RecursionError as exc:
        raise ValueError("JSON nests too deeply") from exc
    canonical(value)  # refuses lone surrogates and integers beyond the double range
    return value


def parse_object(text: str) -> dict[str, Any]:
    """Like `parse`, for text that must hold a JSON object."""
    value = parse(text)
    if not isinstance(value, dict):
        raise ValueError("JSON text is not an object")
    return value


def canonical(value: Any) -> str:
    """The RFC 8785 serialization of a parsed JSON value."""
    out: list[str] = []
    try:
        _write(value, out)
    except RecursionError as exc:
        raise ValueError("JSON nests too deeply") from exc
    return "".join(out)


def sha256_hex(value: Any) -> str:
    """Lowercase hex SHA-256 of the UTF-8 canonical form of a parsed JSON value."""
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member name {name[:64]!r}")
        result[name] = value
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number is out of the double range")
    return value


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int | float):
        out.append(_number(value))
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for index, name in enumerate(sorted(value, key=_utf16)):
            if index:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _write(value[name], out)
        out.append("}")
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _string(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("string holds a lone surrogate") from exc
    # Python's encoder escapes exactly what RFC 8785 asks for, with lowercase hex.
    return json.dumps(value, ensure_ascii=False)


def _number(value: int | float) -> str:
    try:
        number = float(value)
    except OverflowError as exc:
        raise ValueError("integer is out of the double range") from exc
    if not math.isfinite(number):
        raise ValueError("number is out of the double range")
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    mantissa, _, exponent_text = repr(abs(number)).partition("e")  # shortest round-trip digits
    whole, _, fraction = mantissa.partition(".")
    all_digits = (whole + fraction).lstrip("0")
    digits = all_digits.rstrip("0")
    # abs(number) == int(digits) * 10**power == 0.<digits> * 10**point
    power = int(exponent_text or 0) - len(fraction) + (len(all_digits) - len(digits))
    count = len(digits)
    point = power + count
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        exponent = point - 1
        text = digits[0] + (f".{digits[1:]}" if count > 1 else "") + f"e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    return sign + text


def canonical_json(value: object) -> str:
    """The canonical text of a parsed JSON value (`canonical`, under the name the runtime uses)."""
    return canonical(value)


def arguments_hash(arguments_json: str) -> str:
    """SHA-256 (lowercase hex) of the canonical form of a JSON text; ValueError when it is not I-JSON."""
    return sha256_hex(parse(arguments_json))
