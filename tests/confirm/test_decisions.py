"""DecideConfirmation: validated, single-use decisions; every refusal changes nothing but one audit event."""

from __future__ import annotations

import io
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from tests.confirm.conftest import Alice, ConfirmUnderTest, create_request, refused

CREATED = (audit.AUDIT_EVENT_KIND_CREATED, "")
# A decision schema carrying the tool's input schema for edited arguments, as the runtime builds it.
TOOL_INPUT_SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "content": {"type": "string", "maxLength": 20}},
    "required": ["path", "content"],
    "additionalProperties": False,
}
DECISION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "outcome": {"enum": ["approve", "reject"]},
        "reason": {"type": "string"},
        "edited_arguments": TOOL_INPUT_SCHEMA,
    },
    "required": ["outcome"],
    "additionalProperties": False,
}


async def test_approve_records_the_decider_the_surface_and_the_feed_entry(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    decided = await confirm.decide(
        alice, created.id, {"outcome": "approve", "reason": "fine"}, expected_arguments_hash=created.arguments_hash
    )
    assert decided.state == c.CONFIRMATION_STATE_APPROVED
    decision = decided.decision
    assert (decision.outcome, decision.reason, decision.decided_by, decision.surface) == (
        c.DECISION_OUTCOME_APPROVE,
        "fine",
        alice.user_id,
        c.SURFACE_PWA,
    )
    assert decision.edited_arguments_json == ""
    assert json.loads(decision.decision_json) == {"outcome": "approve", "reason": "fine"}
    assert decided.update_time == decision.decide_time
    assert await confirm.get(alice, created.id) == decided
    assert len(await confirm.feed_entries(created.id)) == 1
    assert await confirm.audit_kinds(alice, created.id) == [CREATED, (audit.AUDIT_EVENT_KIND_DECIDED, "fine")]


async def test_reject_is_recorded(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    decided = await confirm.decide(alice, created.id, {"outcome": "reject"}, surface=c.SURFACE_MCP)
    assert (decided.state, decided.decision.outcome, decided.decision.surface) == (
        c.CONFIRMATION_STATE_REJECTED,
        c.DECISION_OUTCOME_REJECT,
        c.SURFACE_MCP,
    )
    assert len(await confirm.feed_entries(created.id)) == 1


async def test_edited_arguments_are_checked_against_the_tools_schema(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice, decision_schema_json=json.dumps(DECISION_SCHEMA))
    too_long = {"outcome": "approve", "edited_arguments": {"path": "a", "content": "x" * 21}}
    async with unchanged(confirm, alice, created.id):
        error = await refused(confirm.decide(alice, created.id, too_long))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DECISION_INVALID")
    assert "edited_arguments/content" in error.message
    edited = {"outcome": "approve", "edited_arguments": {"content": "buy oat milk", "path": "notes/todo.md"}}
    decided = await confirm.decide(alice, created.id, edited)
    assert decided.decision.edited_arguments_json == '{"content":"buy oat milk","path":"notes/todo.md"}'
    assert decided.arguments_json == created.arguments_json  # the proposal stays as it was


async def test_edited_arguments_are_checked_against_the_arguments_schema(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice, arguments_schema_json=json.dumps(TOOL_INPUT_SCHEMA))
    for edited in ({"path": "a"}, {"path": "a", "content": "x" * 21}, {"path": 1, "content": ""}):
        async with unchanged(confirm, alice, created.id):
            error = await refused(confirm.decide(alice, created.id, {"outcome": "approve", "edited_arguments": edited}))
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DECISION_INVALID")
        assert "the tool's input schema" in error.message
    rejected = await confirm.decide(alice, created.id, {"outcome": "reject"})  # no edit: nothing to check
    assert rejected.state == c.CONFIRMATION_STATE_REJECTED


async def test_a_fitting_edit_passes_the_arguments_schema(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice, arguments_schema_json=json.dumps(TOOL_INPUT_SCHEMA))
    edited = {"outcome": "approve", "edited_arguments": {"path": "notes/todo.md", "content": "buy oat milk"}}
    decided = await confirm.decide(alice, created.id, edited)
    assert decided.state == c.CONFIRMATION_STATE_APPROVED


async def test_an_arguments_schema_naming_a_document_it_lacks_refuses_every_edit_and_fetches_nothing(
    confirm: ConfirmUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[object] = []

    def urlopen(*args: object, **kwargs: object) -> io.BytesIO:
        fetched.append(args)
        return io.BytesIO(b"{}")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    alice = confirm.person()
    schema = {"type": "object", "properties": {"path": {"$ref": "http://127.0.0.1:9/internal/path.json"}}}
    created = await confirm.create(alice, arguments_schema_json=json.dumps(schema))
    edited = {"outcome": "approve", "edited_arguments": {"path": "a"}}
    async with unchanged(confirm, alice, created.id):
        error = await refused(confirm.decide(alice, created.id, edited))
    assert (error.reason, "cannot be checked" in error.message) == ("DECISION_INVALID", True)
    assert fetched == []  # jsonschema's default would have fetched the document (and validated against it)
    assert (await confirm.decide(alice, created.id, {"outcome": "approve"})).state == c.CONFIRMATION_STATE_APPROVED


async def test_an_edit_nested_too_deep_for_the_schema_is_refused(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    schema = {"$defs": {"n": {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    created = await confirm.create(alice, arguments_schema_json=json.dumps(schema))
    nested: dict[str, object] = {}
    for _ in range(600):
        nested = {"n": nested}
    async with unchanged(confirm, alice, created.id):
        error = await refused(confirm.decide(alice, created.id, {"outcome": "approve", "edited_arguments": nested}))
    assert error.reason == "DECISION_INVALID"


async def test_an_outcome_unknown_confirmation_takes_no_edits(confirm: ConfirmUnderTest) -> None:
    """It asks whether to try the same write again: an edit would be a different write (and was ignored)."""
    alice = confirm.person()
    approved = await confirm.create(alice)
    await confirm.decide(alice, approved.id, {"outcome": "approve"})
    unknown = await confirm.create(alice, kind=c.CONFIRMATION_KIND_OUTCOME_UNKNOWN, related_confirmation_id=approved.id)
    edited = {"outcome": "approve", "edited_arguments": {"path": "elsewhere"}}
    async with unchanged(confirm, alice, unknown.id):
        error = await refused(confirm.decide(alice, unknown.id, edited))
    assert (error.reason, "no edited_arguments" in error.message) == ("DECISION_INVALID", True)
    assert (await confirm.decide(alice, unknown.id, {"outcome": "approve"})).state == c.CONFIRMATION_STATE_APPROVED


@pytest.mark.parametrize("schema", ['{"type": "object"', '["not", "an", "object"]', '{"type": "no-such-type"}'])
async def test_a_bad_arguments_schema_is_refused_at_creation(confirm: ConfirmUnderTest, schema: str) -> None:
    error = await refused(confirm.create(confirm.person(), arguments_schema_json=schema))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert error.metadata["field"] == "arguments_schema_json"


async def test_a_replayed_create_finds_the_confirmation_whatever_its_tool_schema(
    confirm: ConfirmUnderTest,
) -> None:
    """A replica resuming after the tool's schema changed (or one made before the field existed) finds it again."""
    alice = confirm.person()
    first = create_request(alice, arguments_schema_json=json.dumps(TOOL_INPUT_SCHEMA))
    created = (await confirm.stub.CreateConfirmation(first, metadata=alice.runtime)).confirmation
    for schema in ("", json.dumps({"type": "object"})):
        again = create_request(alice, **{f.name: v for f, v in first.ListFields() if f.name != "arguments_schema_json"})
        again.arguments_schema_json = schema
        assert (await confirm.stub.CreateConfirmation(again, metadata=alice.runtime)).confirmation.id == created.id
    too_long = {"outcome": "approve", "edited_arguments": {"path": "a", "content": "x" * 21}}
    error = await refused(confirm.decide(alice, created.id, too_long))  # the first request's schema still applies
    assert error.reason == "DECISION_INVALID"


async def test_the_default_schema_takes_any_edited_object(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    decided = await confirm.decide(alice, created.id, {"outcome": "approve", "edited_arguments": {"b": 1.0, "a": []}})
    assert decided.decision.edited_arguments_json == '{"a":[],"b":1}'


async def test_the_identical_decision_again_is_idempotent(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    first = await confirm.decide(alice, created.id, '{"outcome": "approve", "reason": "ok"}')
    # Canonically equal JSON, from the same principal, via another surface: the same result.
    again = await confirm.decide(alice, created.id, '{"reason":"ok","outcome":"approve"}', surface=c.SURFACE_API)
    assert again == first
    assert len(await confirm.feed_entries(created.id)) == 1
    assert await confirm.audit_kinds(alice, created.id) == [CREATED, (audit.AUDIT_EVENT_KIND_DECIDED, "ok")]


@asynccontextmanager
async def unchanged(confirm: ConfirmUnderTest, who: Alice, confirmation_id: str) -> AsyncIterator[None]:
    """The block must leave the confirmation and its feed entries exactly as they were."""
    before = (await confirm.get(who, confirmation_id), await confirm.feed_entries(confirmation_id))
    yield
    assert (await confirm.get(who, confirmation_id), await confirm.feed_entries(confirmation_id)) == before


async def _decided(confirm: ConfirmUnderTest, who: Alice) -> c.Confirmation:
    created = await confirm.create(who)
    return await confirm.decide(who, created.id, {"outcome": "approve"})


async def _expired(confirm: ConfirmUnderTest, who: Alice) -> c.Confirmation:
    created = await confirm.create(who)
    await confirm.make_overdue(created.id)
    return await confirm.get(who, created.id)


async def _cancelled(confirm: ConfirmUnderTest, who: Alice) -> c.Confirmation:
    created = await confirm.create(who)
    await confirm.stub.CancelConfirmations(pb.CancelConfirmationsRequest(run_id=who.run_id), metadata=who.runtime)
    return await confirm.get(who, created.id)


async def _pending(confirm: ConfirmUnderTest, who: Alice) -> c.Confirmation:
    return await confirm.create(who)


# (what the confirmation is, the decision request, the expected code and reason). Where several
# checks fail at once, the contract's order decides which one answers.
REFUSALS: dict[str, tuple[Any, dict[str, Any], grpc.StatusCode, str]] = {
    "expired": (
        _expired,
        {"decision": {"outcome": "approve"}},
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIRMATION_EXPIRED",
    ),
    "expired before a mismatch": (
        _expired,
        {"decision": "not json", "expected_arguments_hash": "0" * 64},
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIRMATION_EXPIRED",
    ),
    "cancelled run": (
        _cancelled,
        {"decision": {"outcome": "approve"}},
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_STATE_CONFLICT",
    ),
    "decided differently": (
        _decided,
        {"decision": {"outcome": "reject"}},
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIRMATION_ALREADY_DECIDED",
    ),
    "decided, before a mismatch": (
        _decided,
        {"decision": {"outcome": "reject"}, "expected_arguments_hash": "0" * 64},
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIRMATION_ALREADY_DECIDED",
    ),
    "mismatched arguments": (
        _pending,
        {"decision": {"outcome": "approve"}, "expected_arguments_hash": "0" * 64},
        grpc.StatusCode.FAILED_PRECONDITION,
        "ARGUMENTS_MISMATCH",
    ),
    "mismatch before an invalid decision": (
        _pending,
        {"decision": "{", "expected_arguments_hash": "0" * 64},
        grpc.StatusCode.FAILED_PRECONDITION,
        "ARGUMENTS_MISMATCH",
    ),
    "not JSON": (_pending, {"decision": "approve"}, grpc.StatusCode.INVALID_ARGUMENT, "DECISION_INVALID"),
    "outside the schema": (
        _pending,
        {"decision": {"outcome": "maybe"}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DECISION_INVALID",
    ),
    "unknown property": (
        _pending,
        {"decision": {"outcome": "approve", "extra": 1}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DECISION_INVALID",
    ),
    "invalid before a bad surface": (
        _pending,
        {"decision": [], "surface": c.SURFACE_SYSTEM},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DECISION_INVALID",
    ),
    "system surface": (
        _pending,
        {"decision": {"outcome": "approve"}, "surface": c.SURFACE_SYSTEM},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    ),
    "no surface": (
        _pending,
        {"decision": {"outcome": "approve"}, "surface": c.SURFACE_UNSPECIFIED},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_decision_changes_nothing_but_one_audit_event(confirm: ConfirmUnderTest, case: str) -> None:
    make, fields, code, reason = REFUSALS[case]
    alice = confirm.person()
    confirmation = await make(confirm, alice)
    events = await confirm.audit_kinds(alice, confirmation.id)
    fields = dict(fields)
    decision = fields.pop("decision")
    async with unchanged(confirm, alice, confirmation.id):
        error = await refused(confirm.decide(alice, confirmation.id, decision, **fields))
    assert (error.code, error.reason) == (code, reason)
    assert await confirm.audit_kinds(alice, confirmation.id) == [
        *events,
        (audit.AUDIT_EVENT_KIND_DECISION_REFUSED, reason),
    ]


async def test_a_refusal_is_audited_with_the_decider_and_surface(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    decided = await _decided(confirm, alice)
    await refused(confirm.decide(alice, decided.id, {"outcome": "reject"}, surface=c.SURFACE_MCP))
    events = await confirm.stub.ListAuditEvents(
        pb.ListAuditEventsRequest(confirmation_id=decided.id), metadata=alice.me
    )
    last = events.audit_events[-1]
    assert (last.kind, last.actor, last.surface, last.run_id) == (
        audit.AUDIT_EVENT_KIND_DECISION_REFUSED,
        alice.user_id,
        c.SURFACE_MCP,
        alice.run_id,
    )


async def test_another_principal_repeating_the_decision_is_refused(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    decided = await _decided(confirm, alice)
    # The runtime acting for Alice is another principal than Alice herself.
    request = pb.DecideConfirmationRequest(
        confirmation_id=decided.id, decision_json='{"outcome": "approve"}', surface=c.SURFACE_GRPC
    )
    error = await refused(confirm.stub.DecideConfirmation(request, metadata=alice.runtime))
    assert error.reason == "CONFIRMATION_ALREADY_DECIDED"


async def test_deciding_an_overdue_confirmation_expires_it_and_refuses(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    await confirm.make_overdue(created.id)
    error = await refused(confirm.decide(alice, created.id, {"outcome": "approve"}))
    assert error.reason == "CONFIRMATION_EXPIRED"
    assert (await confirm.get(alice, created.id)).state == c.CONFIRMATION_STATE_EXPIRED
    assert len(await confirm.feed_entries(created.id)) == 1  # the expiry is on the feed, so the run resumes
    assert await confirm.audit_kinds(alice, created.id) == [
        CREATED,
        (audit.AUDIT_EVENT_KIND_EXPIRED, ""),
        (audit.AUDIT_EVENT_KIND_DECISION_REFUSED, "CONFIRMATION_EXPIRED"),
    ]


async def test_unknown_ids_are_not_found_and_not_audited(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    error = await refused(confirm.decide(alice, "no-such-confirmation", {"outcome": "approve"}))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CONFIRMATION_NOT_FOUND")
    everything = await confirm.stub.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=alice.me)
    assert list(everything.audit_events) == []
