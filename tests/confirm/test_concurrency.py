"""Concurrent deciders: of twenty different decisions on one confirmation exactly one wins."""

from __future__ import annotations

import asyncio
import json

import grpc

from steward.confirm.v1 import audit_event_pb2 as audit
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2 as c
from steward.errors import from_rpc_error
from tests.confirm.conftest import ConfirmUnderTest

DECIDERS = 20


async def test_twenty_concurrent_decisions_one_wins_the_rest_are_refused(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    created = await confirm.create(alice)
    requests = [
        pb.DecideConfirmationRequest(
            confirmation_id=created.id,
            decision_json=json.dumps({"outcome": "approve" if i % 2 else "reject", "reason": f"decider {i}"}),
            surface=c.SURFACE_PWA,
        )
        for i in range(DECIDERS)
    ]
    results = await asyncio.gather(
        *(confirm.stub.DecideConfirmation(request, metadata=alice.me) for request in requests), return_exceptions=True
    )
    winners = [result for result in results if isinstance(result, pb.DecideConfirmationResponse)]
    losers = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == DECIDERS - 1
    assert {(error.code(), from_rpc_error(error).reason) for error in losers} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_ALREADY_DECIDED")
    }
    stored = await confirm.get(alice, created.id)
    assert stored == winners[0].confirmation
    assert len(await confirm.feed_entries(created.id)) == 1
    kinds = [kind for kind, _ in await confirm.audit_kinds(alice, created.id)]
    assert kinds.count(audit.AUDIT_EVENT_KIND_DECIDED) == 1
    assert kinds.count(audit.AUDIT_EVENT_KIND_DECISION_REFUSED) == DECIDERS - 1
