"""Writes the agent's policy approves (autonomous mode): created APPROVED for the execution ledger, recorded as
decided by the policy, never in the decision feed, and never decided again by a person."""

from __future__ import annotations

import grpc

from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from steward.confirm.v1 import execution_pb2 as ex
from tests.confirm.conftest import ConfirmUnderTest, create_request, refused


async def test_a_policy_approval_is_created_approved_and_goes_through_the_ledger(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    request = create_request(alice, approved_by_policy=True)
    created = (await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)).confirmation
    assert created.state == c.CONFIRMATION_STATE_APPROVED
    assert (created.decision.outcome, created.decision.decided_by, created.decision.surface) == (
        c.DECISION_OUTCOME_APPROVE,
        "policy",
        c.SURFACE_POLICY,
    )
    assert created.HasField("acknowledge_time")  # nothing waits for it
    assert await confirm.audit_kinds(alice, created.id) == [
        (audit.AUDIT_EVENT_KIND_CREATED, ""),
        (audit.AUDIT_EVENT_KIND_DECIDED, ""),
    ]
    again = (await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)).confirmation
    assert again == created  # idempotent by request_id, like any create
    started = await confirm.stub.BeginExecution(
        pb.BeginExecutionRequest(confirmation_id=created.id, lease_epoch=1, arguments_hash=created.arguments_hash),
        metadata=alice.runtime,
    )
    assert started.created
    assert started.execution.state == ex.EXECUTION_STATE_STARTED
    assert started.execution.idempotency_key == created.id
    swept = await confirm.stub.ListDecidedConfirmations(pb.ListDecidedConfirmationsRequest(), metadata=confirm.feed())
    assert created.id not in {item.id for item in swept.confirmations}
    assert await confirm.feed_entries(created.id) == []


async def test_a_person_cannot_decide_a_policy_approval(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    request = create_request(alice, approved_by_policy=True)
    created = (await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)).confirmation
    decide = pb.DecideConfirmationRequest(
        confirmation_id=created.id, decision_json='{"outcome": "reject"}', surface=c.SURFACE_API
    )
    error = await refused(confirm.stub.DecideConfirmation(decide, metadata=alice.me))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_ALREADY_DECIDED")
    assert (await confirm.get(alice, created.id)).state == c.CONFIRMATION_STATE_APPROVED


async def test_the_policy_flag_is_part_of_the_request_and_only_for_tool_writes(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    request = create_request(alice)
    await confirm.stub.CreateConfirmation(request, metadata=alice.runtime)
    request.approved_by_policy = True  # the same request id, asking for something else
    error = await refused(confirm.stub.CreateConfirmation(request, metadata=alice.runtime))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")
    unknown = create_request(
        alice,
        approved_by_policy=True,
        kind=c.CONFIRMATION_KIND_OUTCOME_UNKNOWN,
        related_confirmation_id=(await confirm.create(alice)).id,
    )
    error = await refused(confirm.stub.CreateConfirmation(unknown, metadata=alice.runtime))
    assert (error.code, error.reason, error.metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "approved_by_policy",
    )
