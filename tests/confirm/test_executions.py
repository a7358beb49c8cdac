"""The execution ledger: STARTED once per approved confirmation, fenced, finished exactly one way."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from steward.confirm.v1 import execution_pb2 as ex
from tests.confirm.conftest import Alice, ConfirmUnderTest, refused


async def _approved(confirm: ConfirmUnderTest, who: Alice, decision: str = '{"outcome": "approve"}') -> c.Confirmation:
    created = await confirm.create(who)
    return await confirm.decide(who, created.id, decision)


def begin(confirmation_id: str, epoch: int = 1, **fields: object) -> pb.BeginExecutionRequest:
    return pb.BeginExecutionRequest(confirmation_id=confirmation_id, lease_epoch=epoch, **fields)  # type: ignore[arg-type]


def finish(confirmation_id: str, epoch: int = 1, **fields: object) -> pb.FinishExecutionRequest:
    return pb.FinishExecutionRequest(confirmation_id=confirmation_id, lease_epoch=epoch, **fields)  # type: ignore[arg-type]


async def test_begin_records_started_once_and_returns_it_again(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    approved = await _approved(confirm, alice)
    first = await confirm.stub.BeginExecution(
        begin(approved.id, idempotent=True, arguments_hash=approved.arguments_hash), metadata=alice.runtime
    )
    assert first.created
    execution = first.execution
    assert (execution.state, execution.idempotent, execution.idempotency_key, execution.arguments_hash) == (
        ex.EXECUTION_STATE_STARTED,
        True,
        approved.id,  # the default key is the confirmation id
        approved.arguments_hash,
    )
    assert (execution.run_id, execution.tool_call_id, execution.lease_epoch) == (
        alice.run_id,
        approved.tool_call_id,
        1,
    )
    # After a crash the caller begins again: it gets the recorded entry (a recorded key wins).
    again = await confirm.stub.BeginExecution(
        begin(approved.id, idempotent=False, idempotency_key="other"), metadata=alice.runtime
    )
    assert (again.created, again.execution) == (False, execution)
    got = await confirm.stub.GetExecution(pb.GetExecutionRequest(confirmation_id=approved.id), metadata=alice.runtime)
    assert got.execution == execution


async def test_a_higher_epoch_replaces_the_recorded_one_and_a_stale_one_is_fenced(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    approved = await _approved(confirm, alice)
    await confirm.stub.BeginExecution(begin(approved.id, epoch=1), metadata=alice.runtime)
    taken_over = await confirm.stub.BeginExecution(begin(approved.id, epoch=3), metadata=alice.runtime)
    assert (taken_over.created, taken_over.execution.lease_epoch) == (False, 3)
    stale = await refused(confirm.stub.BeginExecution(begin(approved.id, epoch=2), metadata=alice.runtime))
    assert (stale.code, stale.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_LOST")
    stale = await refused(
        confirm.stub.FinishExecution(finish(approved.id, epoch=2, result_json="{}"), metadata=alice.runtime)
    )
    assert stale.reason == "LEASE_LOST"
    got = await confirm.stub.GetExecution(pb.GetExecutionRequest(confirmation_id=approved.id), metadata=alice.runtime)
    assert (got.execution.state, got.execution.lease_epoch) == (ex.EXECUTION_STATE_STARTED, 3)


async def test_finish_is_idempotent_and_a_different_finish_is_refused(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    approved = await _approved(confirm, alice)
    await confirm.stub.BeginExecution(begin(approved.id), metadata=alice.runtime)
    done = finish(approved.id, result_json='{"content": "written"}', is_error=False)
    first = (await confirm.stub.FinishExecution(done, metadata=alice.runtime)).execution
    assert (first.state, first.result_json, first.is_error) == (
        ex.EXECUTION_STATE_FINISHED,
        '{"content": "written"}',
        False,
    )
    assert first.HasField("finish_time")
    assert (await confirm.stub.FinishExecution(done, metadata=alice.runtime)).execution == first
    for different in (
        finish(approved.id, result_json='{"content": "other"}'),
        finish(approved.id, result_json='{"content": "written"}', is_error=True),
        finish(approved.id, outcome_unknown=True),
    ):
        error = await refused(confirm.stub.FinishExecution(different, metadata=alice.runtime))
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_STATE_CONFLICT")
    got = await confirm.stub.GetExecution(pb.GetExecutionRequest(confirmation_id=approved.id), metadata=alice.runtime)
    assert got.execution == first
    assert (await confirm.audit_kinds(alice, approved.id))[-2:] == [
        (audit.AUDIT_EVENT_KIND_EXECUTION_STARTED, ""),
        (audit.AUDIT_EVENT_KIND_EXECUTION_FINISHED, ""),
    ]


async def test_a_write_found_started_after_a_crash_can_be_marked_outcome_unknown(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    approved = await _approved(confirm, alice)
    await confirm.stub.BeginExecution(begin(approved.id, idempotent=False), metadata=alice.runtime)
    unknown = (
        await confirm.stub.FinishExecution(finish(approved.id, epoch=2, outcome_unknown=True), metadata=alice.runtime)
    ).execution
    assert (unknown.state, unknown.result_json, unknown.lease_epoch) == (ex.EXECUTION_STATE_OUTCOME_UNKNOWN, "", 2)
    assert (
        await confirm.stub.FinishExecution(finish(approved.id, epoch=2, outcome_unknown=True), metadata=alice.runtime)
    ).execution == unknown
    error = await refused(
        confirm.stub.FinishExecution(finish(approved.id, epoch=2, result_json="{}"), metadata=alice.runtime)
    )
    assert error.reason == "CONFIRMATION_STATE_CONFLICT"
    assert (await confirm.audit_kinds(alice, approved.id))[-1] == (audit.AUDIT_EVENT_KIND_OUTCOME_UNKNOWN, "")


async def test_only_approved_confirmations_execute(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    pending = await confirm.create(alice)
    rejected = await _approved(confirm, alice, '{"outcome": "reject"}')
    for confirmation in (pending, rejected):
        error = await refused(confirm.stub.BeginExecution(begin(confirmation.id), metadata=alice.runtime))
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_STATE_CONFLICT")
    error = await refused(confirm.stub.FinishExecution(finish(pending.id, result_json="{}"), metadata=alice.runtime))
    assert error.reason == "CONFIRMATION_STATE_CONFLICT"  # no entry is STARTED
    missing = await refused(
        confirm.stub.GetExecution(pb.GetExecutionRequest(confirmation_id=pending.id), metadata=alice.runtime)
    )
    assert (missing.code, missing.reason, missing.metadata["resource"]) == (
        grpc.StatusCode.NOT_FOUND,
        "CONFIRMATION_NOT_FOUND",
        "execution",
    )


async def test_the_executed_arguments_must_be_the_approved_ones(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    edited = await _approved(confirm, alice, '{"outcome": "approve", "edited_arguments": {"path": "x", "n": 1.0}}')
    edited_hash = hashlib.sha256(b'{"n":1,"path":"x"}').hexdigest()
    error = await refused(
        confirm.stub.BeginExecution(begin(edited.id, arguments_hash=edited.arguments_hash), metadata=alice.runtime)
    )
    assert (error.code, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "arguments_hash")
    begun = await confirm.stub.BeginExecution(begin(edited.id, arguments_hash=edited_hash), metadata=alice.runtime)
    assert begun.execution.arguments_hash == edited_hash


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.BeginExecutionRequest(confirmation_id="x"), "lease_epoch"),
        (pb.BeginExecutionRequest(confirmation_id="x", lease_epoch=1, arguments_hash="ABC"), "arguments_hash"),
        (pb.FinishExecutionRequest(confirmation_id="x", lease_epoch=1, result_json="not json"), "result_json"),
        (
            pb.FinishExecutionRequest(confirmation_id="x", lease_epoch=1, result_json="x" * (1024 * 1024 + 1)),
            "result_json",
        ),
    ],
)
async def test_bad_ledger_requests_are_refused(
    confirm: ConfirmUnderTest, request_: pb.BeginExecutionRequest | pb.FinishExecutionRequest, field: str
) -> None:
    alice = confirm.person()
    if isinstance(request_, pb.BeginExecutionRequest):
        error = await refused(confirm.stub.BeginExecution(request_, metadata=alice.runtime))
    else:
        error = await refused(confirm.stub.FinishExecution(request_, metadata=alice.runtime))
    assert (error.code, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, field)
