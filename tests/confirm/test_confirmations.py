"""Create, get, list and cancel confirmations; idempotent creates; lazy expiry; request validation."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from services.confirm.decisions import DEFAULT_DECISION_SCHEMA_JSON
from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from tests.confirm.conftest import ARGUMENTS, ConfirmUnderTest, create_request, refused


async def test_create_then_get_returns_the_pending_confirmation(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(
        alice, arguments_json='{ "lines":[1, 2.50], "path":"notes/todo.md","content":"buy milk"}'
    )
    assert created.state == c.CONFIRMATION_STATE_PENDING
    assert created.user_id == alice.user_id
    assert created.run_id == alice.run_id
    assert not created.HasField("decision")
    assert created.decision_schema_json == DEFAULT_DECISION_SCHEMA_JSON
    # The hash is over the canonical form, whatever the spacing, key order or number spelling.
    canonical = '{"content":"buy milk","lines":[1,2.5],"path":"notes/todo.md"}'
    assert created.arguments_hash == hashlib.sha256(canonical.encode()).hexdigest()
    ttl = created.expire_time.ToDatetime() - created.create_time.ToDatetime()
    assert ttl == timedelta(minutes=15)
    assert await confirm.get(alice, created.id) == created
    assert await confirm.audit_kinds(alice, created.id) == [(audit.AUDIT_EVENT_KIND_CREATED, "")]


async def test_a_repeated_request_id_returns_the_same_confirmation(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    request = create_request(alice)
    first = (await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)).confirmation
    # A replica that took the run over repeats the call with its own, higher epoch.
    request.lease_epoch = 2
    again = (await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)).confirmation
    assert again == first
    listed = await confirm.stub.ListConfirmations(pb.ListConfirmationsRequest(run_id=alice.run_id), metadata=alice.me)
    assert [item.id for item in listed.confirmations] == [first.id]
    assert await confirm.audit_kinds(alice, first.id) == [(audit.AUDIT_EVENT_KIND_CREATED, "")]


async def test_a_request_id_reused_with_other_content_is_refused(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    request = create_request(alice)
    await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)
    request.arguments_json = json.dumps({**ARGUMENTS, "content": "sell milk"})
    error = await refused(confirm.stub.CreateConfirmation(request, metadata=alice.runtime))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")


async def test_a_stale_lease_epoch_is_fenced_off(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    await confirm.create(alice, lease_epoch=3)
    error = await refused(confirm.stub.CreateConfirmation(create_request(alice, lease_epoch=2), metadata=alice.runtime))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_LOST")
    listed = await confirm.stub.ListConfirmations(pb.ListConfirmationsRequest(run_id=alice.run_id), metadata=alice.me)
    assert len(listed.confirmations) == 1


async def test_list_shows_pending_newest_first_and_pages_by_key(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = [await confirm.create(alice) for _ in range(5)]
    await confirm.decide(alice, created[1].id, {"outcome": "reject"})
    pending = [item.id for item in reversed(created) if item.id != created[1].id]
    seen: list[str] = []
    token = ""
    while True:
        page = await confirm.stub.ListConfirmations(
            pb.ListConfirmationsRequest(page_size=2, page_token=token), metadata=alice.me
        )
        seen += [item.id for item in page.confirmations]
        if not (token := page.next_page_token):
            break
        if len(seen) == 2:  # a confirmation created while paging does not shift the later pages
            await confirm.create(alice)
    assert seen == pending
    rejected = await confirm.stub.ListConfirmations(
        pb.ListConfirmationsRequest(states=[c.CONFIRMATION_STATE_REJECTED]), metadata=alice.me
    )
    assert [item.id for item in rejected.confirmations] == [created[1].id]
    other_run = await confirm.stub.ListConfirmations(pb.ListConfirmationsRequest(run_id="another"), metadata=alice.me)
    assert list(other_run.confirmations) == []


async def test_an_overdue_confirmation_is_expired_on_get_and_on_list(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    first, second = await confirm.create(alice), await confirm.create(alice)
    await confirm.make_overdue(first.id)
    expired = await confirm.get(alice, first.id)
    assert expired.state == c.CONFIRMATION_STATE_EXPIRED
    decision = expired.decision
    assert (decision.outcome, decision.surface, decision.decided_by) == (
        c.DECISION_OUTCOME_REJECT,
        c.SURFACE_SYSTEM,
        "",
    )
    assert len(await confirm.feed_entries(first.id)) == 1
    assert await confirm.get(alice, first.id) == expired  # expired once
    await confirm.make_overdue(second.id)
    listed = await confirm.stub.ListConfirmations(pb.ListConfirmationsRequest(run_id=alice.run_id), metadata=alice.me)
    assert list(listed.confirmations) == []  # never listed PENDING past its expiry
    assert (await confirm.get(alice, second.id)).state == c.CONFIRMATION_STATE_EXPIRED
    assert await confirm.audit_kinds(alice, second.id) == [
        (audit.AUDIT_EVENT_KIND_CREATED, ""),
        (audit.AUDIT_EVENT_KIND_EXPIRED, ""),
    ]


async def test_cancel_ends_a_runs_confirmations_and_refuses_later_creates(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    pending, decided = await confirm.create(alice), await confirm.create(alice)
    await confirm.decide(alice, decided.id, {"outcome": "approve"})
    cancel = pb.CancelConfirmationsRequest(run_id=alice.run_id, reason="cancelled by the user")
    reply = await confirm.stub.CancelConfirmations(cancel, metadata=alice.runtime)
    assert [item.id for item in reply.confirmations] == [pending.id]
    assert reply.confirmations[0].state == c.CONFIRMATION_STATE_CANCELLED
    assert (await confirm.get(alice, decided.id)).HasField("acknowledge_time")  # its decision is consumed
    assert await confirm.audit_kinds(alice, pending.id) == [
        (audit.AUDIT_EVENT_KIND_CREATED, ""),
        (audit.AUDIT_EVENT_KIND_CANCELLED, "cancelled by the user"),
    ]
    assert list((await confirm.stub.CancelConfirmations(cancel, metadata=alice.runtime)).confirmations) == []
    error = await refused(confirm.stub.CreateConfirmation(create_request(alice), metadata=alice.runtime))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_STATE_CONFLICT")


async def test_cancel_before_any_confirmation_still_refuses_later_creates(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    await confirm.stub.CancelConfirmations(pb.CancelConfirmationsRequest(run_id=alice.run_id), metadata=alice.runtime)
    error = await refused(confirm.stub.CreateConfirmation(create_request(alice), metadata=alice.runtime))
    assert error.reason == "RUN_STATE_CONFLICT"


async def test_an_outcome_unknown_confirmation_names_one_of_its_runs_confirmations(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    approved = await confirm.create(alice)
    unknown = await confirm.create(alice, kind=c.CONFIRMATION_KIND_OUTCOME_UNKNOWN, related_confirmation_id=approved.id)
    assert unknown.related_confirmation_id == approved.id
    elsewhere = confirm.person()
    error = await refused(
        confirm.stub.CreateConfirmation(
            create_request(elsewhere, kind=c.CONFIRMATION_KIND_OUTCOME_UNKNOWN, related_confirmation_id=approved.id),
            metadata=elsewhere.runtime,
        )
    )
    assert (error.reason, error.metadata["field"]) == ("INVALID_ARGUMENT", "related_confirmation_id")


TOOL_SCHEMA_DECISION = {
    "type": "object",
    "properties": {"outcome": {"enum": ["approve", "reject"]}},
    "required": ["outcome"],
}
DAY = 86_400


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"run_id": ""}, "run_id", "INVALID_ARGUMENT"),
        ({"tool_call_id": ""}, "tool_call_id", "INVALID_ARGUMENT"),
        ({"tool_name": "a\x00b"}, "tool_name", "INVALID_ARGUMENT"),
        ({"arguments_json": "[1, 2]"}, "arguments_json", "INVALID_ARGUMENT"),
        ({"arguments_json": '{"a": 1, "a": 2}'}, "arguments_json", "INVALID_ARGUMENT"),
        ({"arguments_json": '{"a": NaN}'}, "arguments_json", "INVALID_ARGUMENT"),
        ({"arguments_json": json.dumps({"a": "x" * 300_000})}, "arguments_json", "TOO_LARGE"),
        ({"preview": c.Preview(kind=c.PREVIEW_KIND_TEXT)}, "preview.content", "INVALID_ARGUMENT"),
        ({"preview": c.Preview(content="x")}, "preview.kind", "INVALID_ARGUMENT"),
        ({"preview": c.Preview(kind=c.PREVIEW_KIND_JSON, content="{")}, "preview.content", "INVALID_ARGUMENT"),
        ({"kind": c.CONFIRMATION_KIND_UNSPECIFIED}, "kind", "INVALID_ARGUMENT"),
        ({"decision_schema_json": "{"}, "decision_schema_json", "INVALID_ARGUMENT"),
        ({"decision_schema_json": '{"type": 5}'}, "decision_schema_json", "INVALID_ARGUMENT"),
        ({"decision_schema_json": '{"type": "object"}'}, "decision_schema_json", "INVALID_ARGUMENT"),
        (
            {"decision_schema_json": json.dumps({**TOOL_SCHEMA_DECISION, "$ref": "https://example.com/s.json"})},
            "decision_schema_json",
            "INVALID_ARGUMENT",
        ),
        ({"related_confirmation_id": "x"}, "related_confirmation_id", "INVALID_ARGUMENT"),
        ({"ttl": Duration(seconds=8 * DAY)}, "ttl", "INVALID_ARGUMENT"),
        ({"ttl": Duration(seconds=-1)}, "ttl", "INVALID_ARGUMENT"),
        ({"lease_epoch": 0}, "lease_epoch", "INVALID_ARGUMENT"),
    ],
)
async def test_bad_create_requests_are_refused_and_store_nothing(
    confirm: ConfirmUnderTest, overrides: dict[str, object], field: str, reason: str
) -> None:
    alice = confirm.person()
    error = await refused(confirm.stub.CreateConfirmation(create_request(alice, **overrides), metadata=alice.runtime))
    assert (error.code, error.reason, error.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    states = list(c.ConfirmationState.values())[1:]
    listed = await confirm.stub.ListConfirmations(pb.ListConfirmationsRequest(states=states), metadata=alice.me)
    assert list(listed.confirmations) == []


async def test_a_custom_schema_and_ttl_are_kept(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    schema = json.dumps(TOOL_SCHEMA_DECISION)
    created = await confirm.create(alice, decision_schema_json=schema, ttl=Duration(seconds=90))
    assert created.decision_schema_json == schema
    assert created.expire_time.ToDatetime() - created.create_time.ToDatetime() == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListConfirmationsRequest(page_token="not-a-token"), "page_token"),
        (pb.ListConfirmationsRequest(page_size=-1), "page_size"),
        (pb.ListConfirmationsRequest(states=[99]), "states[0]"),  # type: ignore[list-item]
        (pb.ListConfirmationsRequest(run_id="\x00"), "run_id"),
    ],
)
async def test_bad_list_requests_are_refused(
    confirm: ConfirmUnderTest, request_: pb.ListConfirmationsRequest, field: str
) -> None:
    error = await refused(confirm.stub.ListConfirmations(request_, metadata=confirm.person().me))
    assert (error.code, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, field)
