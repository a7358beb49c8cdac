"""kill -9 the runtime while a write its agent's policy approved (autonomous mode) is in flight: the write went
through the execution ledger, so after the restart it is not run again silently; the user is asked, and the
notes server's own record shows it applied exactly once.

The stack is the crash tests' (tests/runtime/procs.py): store, provider and confirm in this process, the runtime
a real process with a 2 s lease running the example notes MCP server over stdio. The write is a non-idempotent
`create_note` whose call is seeded in the conversation with `delay_seconds`, so the notes server holds it for a
second after reading it; killing the runtime alone leaves the server to apply it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from steward.confirm.v1 import confirmation_pb2, execution_pb2
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.procs import RuntimeProcess, alive, backplane, bytes_read, eventually, runtimes
from tests.runtime.procs_client import User, kinds, whole_log

pytestmark = [pytest.mark.processes, pytest.mark.timeout(60)]

DELAY = 1.0  # seconds the notes server holds the write after reading it


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[RuntimeProcess, User]]:
    directory = tmp_path_factory.mktemp("crash-autonomous")
    notes = directory / "notes.db"
    async with (
        backplane(directory, demo_token_interval=0.01) as plane,
        runtimes(plane, directory, notes, ["autonomous-runtime"]) as [runtime],
    ):
        user = User(plane, notes)
        await user.create_agent()
        policy = agent_pb2.ApprovalPolicy(mode=agent_pb2.RUN_MODE_AUTONOMOUS, auto_approved_tools=["notes.create_note"])
        update = store_pb.UpdateAgentRequest(
            agent=agent_pb2.Agent(id=user.agent_id, approval_policy=policy),
            update_mask=FieldMask(paths=["approval_policy"]),
        )
        await user.agents.UpdateAgent(update, metadata=user.metadata)
        try:
            yield runtime, user
        finally:
            await user.close()


async def test_killed_during_a_policy_approved_create_the_user_is_asked_and_it_applies_once(
    stack: tuple[RuntimeProcess, User],
) -> None:
    runtime, user = stack
    await runtime.start()
    arguments = {"title": "Standup", "delay_seconds": DELAY}
    conversation_id = await user.conversation_with_call("note the standup", "notes.create_note", arguments)
    server = runtime.tool_server()
    before = bytes_read(server)
    run = await user.start_run(runtime, conversation_id=conversation_id)
    follower = user.follow(run.id)
    await eventually(lambda: bytes_read(server) > before, what="the notes server to read the write call")
    [approved] = await user.confirmations(run.id, confirmation_pb2.CONFIRMATION_STATE_APPROVED)
    assert (approved.decision.decided_by, approved.decision.surface) == ("policy", confirmation_pb2.SURFACE_POLICY)
    assert user.applied_writes(approved.id) == [], "the write applied before the kill: too slow a machine"
    await runtime.kill()  # the runtime only: its notes server goes on with the write it accepted
    await eventually(lambda: len(user.applied_writes(approved.id)) == 1, what="the orphaned write to apply")
    await eventually(lambda: not alive(server), what="the orphaned notes server to exit")
    await runtime.start()

    # The ledger says STARTED and the tool is not idempotent: never re-run silently, even in autonomous mode.
    await user.wait(run.id, paused=True)
    unknown = await user.pending(run.id)
    assert (unknown.kind, unknown.related_confirmation_id) == (
        confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN,
        approved.id,
    )
    assert (await user.execution(approved.id)).state == execution_pb2.EXECUTION_STATE_OUTCOME_UNKNOWN
    await user.decide(unknown.id, {"outcome": "reject", "reason": "it did happen"})

    ended = await user.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    [write] = user.applied_writes(approved.id)
    assert write.arguments == arguments
    assert user.applied_writes(unknown.id) == []
    assert len(user.applied_writes()) == 1  # nothing else was written by anyone
    names = kinds(await whole_log(user, run.id, follower))
    assert names.count("run_completed") == 1
    assert names.count("confirmation_requested") == 1  # only the person's question; the policy asked nobody
    assert "tool_call_finished" not in names
