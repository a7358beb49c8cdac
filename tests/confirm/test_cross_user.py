"""User B gets NOT_FOUND (and changes and sees nothing) for every confirm RPC on user A's ids.

Every RPC of ConfirmationService must be classified below, either as taking a confirmation id
(with the call B makes on A's id) or as taking none (with why B cannot reach A's data through
it, checked below): a new RPC without a case fails `test_every_rpc_is_classified`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from tests.confirm.conftest import Alice, ConfirmUnderTest, create_request, refused

Call = Callable[[ConfirmUnderTest, str, Alice], Awaitable[Any]]

# B's call on A's confirmation id: B as himself for user RPCs, the runtime acting for B otherwise.
ID_CALLS: dict[str, Call] = {
    "GetConfirmation": lambda s, a, b: s.stub.GetConfirmation(pb.GetConfirmationRequest(id=a), metadata=b.me),
    "DecideConfirmation": lambda s, a, b: s.stub.DecideConfirmation(
        pb.DecideConfirmationRequest(confirmation_id=a, decision_json='{"outcome": "reject"}', surface=c.SURFACE_PWA),
        metadata=b.me,
    ),
    "AcknowledgeDecision": lambda s, a, b: s.stub.AcknowledgeDecision(
        pb.AcknowledgeDecisionRequest(confirmation_id=a, lease_epoch=9), metadata=b.runtime
    ),
    "BeginExecution": lambda s, a, b: s.stub.BeginExecution(
        pb.BeginExecutionRequest(confirmation_id=a, lease_epoch=9), metadata=b.runtime
    ),
    "FinishExecution": lambda s, a, b: s.stub.FinishExecution(
        pb.FinishExecutionRequest(confirmation_id=a, lease_epoch=9, result_json="{}"), metadata=b.runtime
    ),
    "GetExecution": lambda s, a, b: s.stub.GetExecution(pb.GetExecutionRequest(confirmation_id=a), metadata=b.runtime),
}

NO_ID_CALLS = {
    "CreateConfirmation": "creates for the caller; A's run id makes B's own confirmation, A's id as related is refused",
    "ListConfirmations": "lists the caller's confirmations (checked below, also filtered by A's run id)",
    "CancelConfirmations": "cancels the caller's confirmations of a run id (checked below with A's run id)",
    "ListAuditEvents": "lists the caller's events (checked below, also filtered by A's ids)",
    "WatchDecisions": "the runtime service only (tests/confirm/test_principals.py); serves all users by design",
    "ListDecidedConfirmations": "the runtime service only (tests/confirm/test_principals.py); all users by design",
}


def test_every_rpc_is_classified() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["ConfirmationService"].methods}
    assert set(ID_CALLS) | set(NO_ID_CALLS) == methods
    assert not set(ID_CALLS) & set(NO_ID_CALLS)


async def _alices(confirm: ConfirmUnderTest) -> tuple[Alice, c.Confirmation, list[Any]]:
    """Alice with an approved confirmation whose write is STARTED, and everything she can see of it."""
    alice = confirm.person()
    created = await confirm.create(alice)
    await confirm.decide(alice, created.id, {"outcome": "approve"})
    await confirm.stub.BeginExecution(
        pb.BeginExecutionRequest(confirmation_id=created.id, lease_epoch=1), metadata=alice.runtime
    )
    return alice, created, await _everything(confirm, alice, created.id)


async def _everything(confirm: ConfirmUnderTest, alice: Alice, confirmation_id: str) -> list[Any]:
    execution = await confirm.stub.GetExecution(
        pb.GetExecutionRequest(confirmation_id=confirmation_id), metadata=alice.runtime
    )
    events = await confirm.stub.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=alice.me)
    return [await confirm.get(alice, confirmation_id), execution.execution, list(events.audit_events)]


@pytest.mark.parametrize("rpc", sorted(ID_CALLS))
async def test_user_b_gets_not_found_on_user_a_ids(confirm: ConfirmUnderTest, rpc: str) -> None:
    alice, created, before = await _alices(confirm)
    bob = confirm.person()
    error = await refused(ID_CALLS[rpc](confirm, created.id, bob))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CONFIRMATION_NOT_FOUND")
    assert created.id not in error.message or "not found" in error.message
    assert await _everything(confirm, alice, created.id) == before
    bobs = await confirm.stub.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=bob.me)
    assert list(bobs.audit_events) == []  # no refusal is filed anywhere


async def test_user_b_reaches_none_of_user_a_data_without_ids(confirm: ConfirmUnderTest) -> None:
    alice, created, before = await _alices(confirm)
    bob = confirm.person()
    all_states = list(c.ConfirmationState.values())[1:]
    for request in (
        pb.ListConfirmationsRequest(states=all_states),
        pb.ListConfirmationsRequest(states=all_states, run_id=alice.run_id),
    ):
        assert list((await confirm.stub.ListConfirmations(request, metadata=bob.me)).confirmations) == []
    for audit_request in (
        pb.ListAuditEventsRequest(),
        pb.ListAuditEventsRequest(run_id=alice.run_id),
        pb.ListAuditEventsRequest(confirmation_id=created.id),
    ):
        assert list((await confirm.stub.ListAuditEvents(audit_request, metadata=bob.me)).audit_events) == []
    related = create_request(
        bob, run_id=alice.run_id, kind=c.CONFIRMATION_KIND_OUTCOME_UNKNOWN, related_confirmation_id=created.id
    )
    error = await refused(confirm.stub.CreateConfirmation(related, metadata=bob.runtime))
    assert (error.reason, error.metadata["field"]) == ("INVALID_ARGUMENT", "related_confirmation_id")
    bobs_own = await confirm.create(bob, run_id=alice.run_id, lease_epoch=7)  # A's run id, B's confirmation
    assert bobs_own.user_id == bob.user_id
    cancel = pb.CancelConfirmationsRequest(run_id=alice.run_id)
    cancelled = (await confirm.stub.CancelConfirmations(cancel, metadata=bob.runtime)).confirmations
    assert [item.id for item in cancelled] == [bobs_own.id]
    assert await _everything(confirm, alice, created.id) == before
    # Alice's run is neither cancelled nor fenced by what Bob did under its id.
    assert (await confirm.create(alice, lease_epoch=1)).state == c.CONFIRMATION_STATE_PENDING
