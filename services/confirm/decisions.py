"""Decision JSON Schemas (draft 2020-12, checked with jsonschema's Draft202012Validator) and decisions.

A decision schema always requires "outcome" ("approve" or "reject") and may allow "reason" (a
string) and "edited_arguments" (an object). The default allows exactly those three. Edited
arguments are also checked against the confirmation's arguments schema (the tool's input schema,
which the runtime gives at creation; draft 2020-12 unless it names another dialect), so an edit
the tool would refuse is refused when the person decides, and the confirmation stays pending.

Schemas may only use local references ("#..."): nothing is ever fetched. Whatever a schema
allows, a decision is also checked for the contract's shape after validation.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from typing import Any

import grpc
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from services.confirm.db.decide import DecideRequest, Decision, Verdict
from services.confirm.db.models import ConfirmationRow
from services.confirm.validation import CALLER_SURFACES, MAX_REASON_LENGTH, NUL, json_object
from steward import canonical
from steward.confirm.v1 import confirmation_pb2
from steward.decision_schemas import DRAFT_2020_12, MAX_SCHEMA_LENGTH, decision_schema_problem
from steward.errors import StewardError, failed_precondition, invalid_argument

MAX_DECISION_LENGTH = 256 * 1024
_MESSAGE_LENGTH = 300

DEFAULT_DECISION_SCHEMA: dict[str, Any] = {
    "$schema": DRAFT_2020_12,
    "type": "object",
    "properties": {
        "outcome": {"enum": ["approve", "reject"]},
        "reason": {"type": "string", "maxLength": MAX_REASON_LENGTH},
        "edited_arguments": {"type": "object"},
    },
    "required": ["outcome"],
    "additionalProperties": False,
}
DEFAULT_DECISION_SCHEMA_JSON = json.dumps(DEFAULT_DECISION_SCHEMA, separators=(",", ":"))
OUTCOMES = {"approve": confirmation_pb2.DECISION_OUTCOME_APPROVE, "reject": confirmation_pb2.DECISION_OUTCOME_REJECT}


def decision_schema(text: str) -> str:
    """The decision schema to store: the default for empty text, else `text` once it is a usable schema."""
    if not text:
        return DEFAULT_DECISION_SCHEMA_JSON
    field = "decision_schema_json"
    problem = decision_schema_problem(json_object(text, field, MAX_SCHEMA_LENGTH))
    if problem is not None:
        raise invalid_argument(field, f"decision_schema_json {problem}")
    return text


def arguments_schema(text: str) -> str:
    """The arguments schema to store: "" for none, else `text` once it is a usable JSON Schema."""
    if not text:
        return ""
    field = "arguments_schema_json"
    schema = json_object(text, field, MAX_SCHEMA_LENGTH)
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise invalid_argument(field, f"arguments_schema_json is not a JSON Schema: {_short(exc.message)}") from exc
    return text


def check_edited_arguments(schema_text: str, decision: Decision) -> None:
    """DECISION_INVALID when the decision's edited arguments fail the arguments schema (none: nothing to check).

    Nothing is ever fetched: a schema that refers to a document outside itself cannot be evaluated, and refuses
    every edit."""
    if not schema_text or not decision.edited_arguments_json:
        return
    try:
        error = best_match(
            _arguments_validator(schema_text).iter_errors(canonical.parse(decision.edited_arguments_json))
        )
    except (Unresolvable, RecursionError) as exc:  # a reference outside the schema; an edit nested too deep
        raise _invalid("edited_arguments cannot be checked against the tool's input schema") from exc
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise _invalid(f"edited_arguments fail the tool's input schema at {where}: {_short(error.message)}")


def edits_refused() -> StewardError:
    """DECISION_INVALID for edited arguments on a confirmation that asks only whether to try a write again."""
    return _invalid("this confirmation asks whether to try the same write again: it takes no edited_arguments")


def parse_decision(schema_text: str, decision_json: str) -> Decision:
    """The decision in `decision_json`; INVALID_ARGUMENT (DECISION_INVALID) when it is not JSON or fails."""
    if len(decision_json) > MAX_DECISION_LENGTH:
        raise _invalid(f"decision_json is longer than {MAX_DECISION_LENGTH} characters")
    try:
        value = canonical.parse(decision_json)
    except ValueError as exc:
        raise _invalid(f"decision_json is not valid JSON: {exc}") from exc
    try:
        error = best_match(_validator(schema_text).iter_errors(value))
    except Unresolvable as exc:
        raise _invalid("the decision schema cannot be evaluated") from exc
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise _invalid(f"decision_json fails the decision schema at {where}: {_short(error.message)}")
    return _shape(value)


def same_decision(recorded_json: str, decision_json: str) -> bool:
    """True when two decision texts are canonically equal JSON."""
    try:
        recorded = canonical.canonical(canonical.parse(recorded_json))
        return recorded == canonical.canonical(canonical.parse(decision_json))
    except ValueError:
        return False


def _shape(value: Any) -> Decision:
    """The contract's shape, whatever a custom schema allowed."""
    if not isinstance(value, dict) or value.get("outcome") not in OUTCOMES:
        raise _invalid('a decision must be an object whose "outcome" is "approve" or "reject"')
    reason = value.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or NUL in reason:
        raise _invalid(f'"reason" must be a string of at most {MAX_REASON_LENGTH} characters without U+0000')
    edited = value.get("edited_arguments")
    if edited is not None and not isinstance(edited, dict):
        raise _invalid('"edited_arguments" must be a JSON object')
    return Decision(
        outcome=OUTCOMES[value["outcome"]],
        reason=reason,
        edited_arguments_json="" if edited is None else canonical.canonical(edited),
        edited_arguments_hash="" if edited is None else canonical.sha256_hex(edited),
    )


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    return Draft202012Validator(canonical.parse(schema_text), registry=Registry())


@lru_cache(maxsize=256)
def _arguments_validator(schema_text: str) -> Any:
    schema = canonical.parse(schema_text)
    cls = validator_for(schema, default=Draft202012Validator)
    # An empty registry: a reference outside the schema is Unresolvable (jsonschema's default would fetch it).
    return cls(schema, format_checker=cls.FORMAT_CHECKER, registry=Registry())


def _invalid(message: str) -> StewardError:
    return StewardError(grpc.StatusCode.INVALID_ARGUMENT, "DECISION_INVALID", message)


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LENGTH else text[: _MESSAGE_LENGTH - 1] + "…"


def with_decision_arguments(row: ConfirmationRow, decision_json: str, decision: Decision) -> Decision:
    """An approval with the confirmation's decision arguments set in the arguments to execute: the edited (or
    proposed) arguments, with each decision argument the decision gives set to its value. They are then the
    decision's edited arguments, checked against the tool's input schema like any edit, executed and audited."""
    if not row.decision_arguments_json or decision.outcome != confirmation_pb2.DECISION_OUTCOME_APPROVE:
        return decision
    given = canonical.parse(decision_json)
    chosen = {name: given[name] for name in json.loads(row.decision_arguments_json) if name in given}
    if not chosen:
        return decision
    arguments = canonical.parse(decision.edited_arguments_json or row.arguments_json)
    arguments.update(chosen)
    return dataclasses.replace(
        decision,
        edited_arguments_json=canonical.canonical(arguments),
        edited_arguments_hash=canonical.sha256_hex(arguments),
    )


def judge(row: ConfirmationRow, request: DecideRequest) -> Verdict:
    """The contract's checks, in its order, on a confirmation that exists and is the caller's."""
    state = row.state
    if state == confirmation_pb2.CONFIRMATION_STATE_EXPIRED:
        return _refuse(request, failed_precondition("CONFIRMATION_EXPIRED", f"confirmation {row.id} expired"))
    if state == confirmation_pb2.CONFIRMATION_STATE_CANCELLED:
        message = f"the run of confirmation {row.id} has ended"
        return _refuse(request, failed_precondition("RUN_STATE_CONFLICT", message))
    if state != confirmation_pb2.CONFIRMATION_STATE_PENDING:
        if row.decided_by == request.decider and same_decision(row.decision_json, request.decision_json):
            return Verdict()
        message = f"confirmation {row.id} was already decided"
        return _refuse(request, failed_precondition("CONFIRMATION_ALREADY_DECIDED", message))
    if request.expected_arguments_hash and request.expected_arguments_hash != row.arguments_hash:
        message = "the arguments changed since they were shown"
        return _refuse(request, failed_precondition("ARGUMENTS_MISMATCH", message))
    try:
        decision = parse_decision(row.decision_schema_json, request.decision_json)
        if decision.edited_arguments_json and row.kind == confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN:
            raise edits_refused()
        decision = with_decision_arguments(row, request.decision_json, decision)
        check_edited_arguments(row.arguments_schema_json, decision)
    except StewardError as refused:
        return _refuse(request, refused)
    if request.surface not in CALLER_SURFACES:
        return _refuse(request, invalid_argument("surface", "surface must name where the decision was made"))
    return Verdict(decision=decision)


def _refuse(request: DecideRequest, refusal: StewardError) -> Verdict:
    # The refusal's audit event names the caller's surface only when it is one a caller may name.
    surface = request.surface if request.surface in CALLER_SURFACES else confirmation_pb2.SURFACE_UNSPECIFIED
    return Verdict(refusal, surface=surface)
