"""Autonomous mode end to end: a write the agent's policy lets through runs without a person, through the
execution ledger (a confirmation approved by the policy), exactly once; the same write in an interactive run
still asks a person."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2, execution_pb2
from steward.errors import from_rpc_error
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import World, world
from tests.support.grpc_helpers import principal_metadata


@pytest.fixture(scope="module")
async def autonomous(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("autonomous")) as running:
        policy = agent_pb2.ApprovalPolicy(
            mode=agent_pb2.RUN_MODE_AUTONOMOUS,
            auto_approved_tools=["notes.create_note"],
        )
        agent = agent_pb2.Agent(id=running.agent_id, approval_policy=policy)
        update = store_pb.UpdateAgentRequest(agent=agent, update_mask=FieldMask(paths=["approval_policy"]))
        await running.agents.UpdateAgent(update, metadata=running.user)
        yield running


async def _confirmations(world: World, run_id: str) -> list[confirmation_pb2.Confirmation]:
    every = [
        confirmation_pb2.CONFIRMATION_STATE_PENDING,
        confirmation_pb2.CONFIRMATION_STATE_APPROVED,
        confirmation_pb2.CONFIRMATION_STATE_REJECTED,
        confirmation_pb2.CONFIRMATION_STATE_EXPIRED,
        confirmation_pb2.CONFIRMATION_STATE_CANCELLED,
    ]
    request = confirm_pb.ListConfirmationsRequest(run_id=run_id, states=every)
    return list((await world.confirm.ListConfirmations(request, metadata=world.user)).confirmations)


async def test_a_write_the_policy_lets_through_runs_once_through_the_ledger(autonomous: World) -> None:
    before = len(autonomous.applied_writes())
    run = await autonomous.start_run("create_note Standup", mode=agent_pb2.RUN_MODE_AUTONOMOUS)
    ended = await autonomous.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    (confirmation,) = await _confirmations(autonomous, run.id)
    assert confirmation.state == confirmation_pb2.CONFIRMATION_STATE_APPROVED
    assert (confirmation.decision.decided_by, confirmation.decision.surface) == (
        "policy",
        confirmation_pb2.SURFACE_POLICY,
    )
    writes = autonomous.applied_writes()[before:]
    assert [w.idempotency_key for w in writes] == [confirmation.id]  # once, keyed like any approved write
    as_runtime = principal_metadata(autonomous.stack.secret, autonomous.user_id, actor="runtime")
    execution = await autonomous.confirm.GetExecution(
        confirm_pb.GetExecutionRequest(confirmation_id=confirmation.id), metadata=as_runtime
    )
    assert execution.execution.state == execution_pb2.EXECUTION_STATE_FINISHED
    kinds = await autonomous.events(run.id)
    assert "run_paused" not in kinds
    assert "confirmation_requested" not in kinds  # nobody was asked
    assert kinds.index("tool_call_started") < kinds.index("tool_call_finished") < kinds.index("run_completed")
    # Nothing waits for a policy approval in the decision feed.
    feed = principal_metadata(autonomous.stack.secret, "service:runtime")
    decided = await autonomous.confirm.ListDecidedConfirmations(
        confirm_pb.ListDecidedConfirmationsRequest(page_size=100), metadata=feed
    )
    assert confirmation.id not in {c.id for c in decided.confirmations}


async def test_the_same_write_in_an_interactive_run_still_asks_a_person(autonomous: World) -> None:
    before = len(autonomous.applied_writes())
    run = await autonomous.start_run("create_note Ask first", mode=agent_pb2.RUN_MODE_INTERACTIVE)
    paused = await autonomous.wait(run.id, paused=True)
    assert (paused.state, paused.pause_reason) == (run_pb2.RUN_STATE_PAUSED, run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION)
    pending = await autonomous.pending_confirmation(run.id)
    assert (pending.tool_name, pending.state) == ("notes.create_note", confirmation_pb2.CONFIRMATION_STATE_PENDING)
    assert len(autonomous.applied_writes()) == before
    await autonomous.decide(pending.id, {"outcome": "reject"})
    assert (await autonomous.wait(run.id)).state == run_pb2.RUN_STATE_COMPLETED
    assert len(autonomous.applied_writes()) == before


async def test_a_person_cannot_decide_a_policy_approval_again(autonomous: World) -> None:
    run = await autonomous.start_run("create_note Twice", mode=agent_pb2.RUN_MODE_AUTONOMOUS)
    await autonomous.wait(run.id)
    (confirmation,) = await _confirmations(autonomous, run.id)
    request = confirm_pb.DecideConfirmationRequest(
        confirmation_id=confirmation.id, decision_json='{"outcome": "reject"}', surface=confirmation_pb2.SURFACE_GRPC
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await autonomous.confirm.DecideConfirmation(request, metadata=autonomous.user)
    assert from_rpc_error(raised.value).reason == "CONFIRMATION_ALREADY_DECIDED"
    (after,) = await _confirmations(autonomous, run.id)
    assert after.state == confirmation_pb2.CONFIRMATION_STATE_APPROVED
