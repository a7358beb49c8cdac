"""A decision made while the runtime's decision feed (WatchDecisions) is broken still resumes the run: the
runtime's sweep (ListDecidedConfirmations) finds it once the confirm service is back.

The feed is broken the way it breaks in production: the confirm server the runtime follows stops (its stream
ends UNAVAILABLE), while the runtime keeps running. The person decides through another confirm server on the same
database (a second replica), so the decision is made while the runtime has no stream at all. Then a confirm
server starts again on the first one's port. The runtime has seen no feed entry yet, so its new stream starts
from the feed's head, past the decision: only a sweep can bring the run back. With no periodic sweep due, the
one the runtime makes once its new stream's position is fixed does.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from services.confirm.server import create_server as create_confirm
from services.confirm.settings import ConfirmSettings
from steward.auth import SERVICE_PREFIX
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.confirm.v1 import confirmation_pb2
from steward.rpc.server import GrpcServer
from steward.store.v1 import run_pb2
from tests.runtime.harness import World, world
from tests.support.grpc_helpers import principal_metadata


async def decide_elsewhere(running: World, address: str, confirmation_id: str) -> confirmation_pb2.Confirmation:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await confirm_grpc.ConfirmationServiceStub(channel).DecideConfirmation(
            confirm_pb.DecideConfirmationRequest(
                confirmation_id=confirmation_id,
                decision_json=json.dumps({"outcome": "approve"}),
                surface=confirmation_pb2.SURFACE_GRPC,
            ),
            metadata=running.user,
        )
    return reply.confirmation


@pytest.mark.parametrize(
    "sweep_interval",
    [
        pytest.param(600.0, id="by-the-sweep-when-the-feed-is-back"),  # no periodic sweep within the test
        pytest.param(0.5, id="by-the-periodic-sweep"),
    ],
)
async def test_a_decision_made_while_the_feed_is_broken_is_picked_up_by_the_sweep(
    tmp_path: Path, sweep_interval: float
) -> None:
    async with world(tmp_path, sweep_interval=sweep_interval) as running:
        stack = running.stack
        # The confirm server as the stack starts it: same secret, same data directory, so the same database.
        settings = ConfirmSettings.model_validate(
            {"internal_secret": stack.secret, "data_dir": stack.data_dir, "log_json": False}
        )
        run = await running.start_run("create_note While the feed is down")
        await running.wait(run.id, paused=True)
        confirmation = await running.pending_confirmation(run.id)
        port = stack.confirm.port

        await stack.confirm.stop(0.5)  # the runtime's stream ends; the runtime keeps running (and retrying)
        servers: list[GrpcServer] = []
        try:
            servers.append(elsewhere := await create_confirm(settings, "127.0.0.1:0"))
            decided = await decide_elsewhere(running, stack.address(elsewhere), confirmation.id)
            assert decided.state == confirmation_pb2.CONFIRMATION_STATE_APPROVED
            assert (await running.run(run.id)).state == run_pb2.RUN_STATE_PAUSED
            assert running.applied_writes() == []

            servers.append(await create_confirm(settings, f"127.0.0.1:{port}"))  # back where the runtime looks
            ended = await running.wait(run.id, within=15)
            assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
            assert [write.idempotency_key for write in running.applied_writes()] == [confirmation.id]
            kinds = await running.events(run.id)
            assert kinds.count("run_resumed") == 1
            assert kinds[-1] == "run_completed"
            after = await running.confirm.GetConfirmation(
                confirm_pb.GetConfirmationRequest(id=confirmation.id), metadata=running.user
            )
            assert after.confirmation.state == confirmation_pb2.CONFIRMATION_STATE_APPROVED
            # Consumed: the sweep no longer returns it, so the run is not resumed with it again.
            as_runtime = principal_metadata(stack.secret, f"{SERVICE_PREFIX}runtime", actor="runtime")
            swept = await running.confirm.ListDecidedConfirmations(
                confirm_pb.ListDecidedConfirmationsRequest(page_size=500), metadata=as_runtime
            )
            assert confirmation.id not in [item.id for item in swept.confirmations]
        finally:
            for server in reversed(servers):
                await server.stop(0.5)
