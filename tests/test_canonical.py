"""Canonical JSON (RFC 8785) and the argument hash, against the RFC's own examples."""

from __future__ import annotations

import hashlib

import pytest

from steward import canonical


def test_the_rfc_8785_structures_example() -> None:
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical.canonical(canonical.parse(text)) == expected


def test_members_sort_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: U+1F600 (a surrogate pair, D83D DE00) sorts before U+FB33 in UTF-16.
    text = '{"\\u20ac": 1, "\\r": 2, "\\ufb33": 3, "1": 4, "\\ud83d\\ude00": 5, "\\u0080": 6, "\\u00f6": 7}'
    parsed = canonical.parse(text)
    assert canonical.canonical(parsed) == '{"\\r":2,"1":4,"\x80":6,"ö":7,"€":1,"😀":5,"דּ":3}'


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("0", "0"),
        ("-0", "0"),
        ("1.0", "1"),
        ("100", "100"),
        ("1e20", "100000000000000000000"),
        ("1e21", "1e+21"),
        ("0.000001", "0.000001"),
        ("1e-7", "1e-7"),
        ("-1.5e-7", "-1.5e-7"),
        ("123.456", "123.456"),
        ("9007199254740993", "9007199254740992"),  # integers are doubles
        ("295147905179352830000", "295147905179352830000"),
        ("1.7976931348623157e+308", "1.7976931348623157e+308"),
        ("5e-324", "5e-324"),
    ],
)
def test_numbers_print_as_ecmascript_does(number: str, expected: str) -> None:
    assert canonical.canonical(canonical.parse(number)) == expected


@pytest.mark.parametrize(
    "text", ['{"a": 1, "a": 2}', "NaN", "[Infinity]", "1e400", '"\\ud800"', "[" * 100_000, "{", ""]
)
def test_what_is_not_i_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        canonical.parse(text)


def test_the_hash_is_sha256_of_the_utf8_canonical_form() -> None:
    value = canonical.parse('{ "b": [1.0, "é"], "a": null }')
    assert canonical.sha256_hex(value) == hashlib.sha256('{"a":null,"b":[1,"é"]}'.encode()).hexdigest()


def test_the_runtime_and_the_confirm_service_hash_alike() -> None:
    # The runtime hashes what it executes (arguments_hash); the confirm service what it stored (sha256_hex).
    spelled = '{"b": [1.0, 2, {"y": "é", "x": null}], "a": true}'
    other = '{"a":true,"b":[1,2,{"x":null,"y":"\\u00e9"}]}'
    assert canonical.arguments_hash(spelled) == canonical.arguments_hash(other)
    assert canonical.arguments_hash(other) == canonical.sha256_hex(canonical.parse(other))
    assert canonical.canonical_json({"b": 1, "a": [True]}) == '{"a":[true],"b":1}'
