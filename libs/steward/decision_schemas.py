"""What a confirmation's decision JSON Schema must be, for the confirm service (which refuses any other) and the
runtime (which checks a tool's declared schema before it is ever sent, and falls back to the default).

A decision schema is a draft 2020-12 JSON Schema object of at most 64 KiB, with local references only (nothing is
ever fetched), that refuses the empty object: it must require "outcome" ("approve" or "reject"). Whatever it
allows, the confirm service still checks every decision for the contract's shape (docs/proposals.md).
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry

__all__ = ["DRAFT_2020_12", "MAX_SCHEMA_LENGTH", "decision_schema_problem"]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMA_LENGTH = 64 * 1024
_MESSAGE_LENGTH = 300


def decision_schema_problem(schema: Any) -> str | None:
    """Why `schema` (a parsed JSON value) cannot be a decision schema, as a phrase to follow its name; None when it
    can."""
    if not isinstance(schema, dict):
        return "must be a JSON object"
    if len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False)) > MAX_SCHEMA_LENGTH:
        return f"is longer than {MAX_SCHEMA_LENGTH} characters"
    if schema.get("$schema", DRAFT_2020_12) not in (DRAFT_2020_12, DRAFT_2020_12 + "#"):
        return f'must be draft 2020-12 ("$schema": "{DRAFT_2020_12}")'
    if _remote_reference(schema):
        return "may only use local references ($ref starting with #)"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"is not a draft 2020-12 schema: {_short(exc.message)}"
    try:
        requires_nothing = Draft202012Validator(schema, registry=Registry()).is_valid({})
    except Exception:  # noqa: BLE001 - an unresolvable local reference, a pattern the engine refuses: unusable
        return "cannot be evaluated"
    if requires_nothing:
        return 'must require "outcome"'
    return None


def _remote_reference(value: Any) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and not (isinstance(item, str) and item.startswith("#")):
                return True
            if _remote_reference(item):
                return True
    elif isinstance(value, list):
        return any(_remote_reference(item) for item in value)
    return False


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LENGTH else text[: _MESSAGE_LENGTH - 1] + "…"
