"""ClaimRuns with reclaim_held: a replica restarted under the same holder takes back the runs it held, each with a
new epoch that fences its previous start; it never takes a live run another holder holds."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import StoreUnderTest
from tests.store.test_leases import _queued_run, _reason

TTL = Duration(seconds=60)


async def _claim_runs(store: StoreUnderTest, holder: str, *, reclaim_held: bool) -> set[str]:
    request = pb.ClaimRunsRequest(holder=holder, max_runs=100, lease_ttl=TTL, reclaim_held=reclaim_held)
    return {run.id for run in (await store.runs.ClaimRuns(request, metadata=store.service("runtime"))).runs}


async def test_a_restarted_holder_takes_back_its_live_runs_with_new_epochs(store: StoreUnderTest) -> None:
    user = store.user()
    mine = [await _queued_run(store, user) for _ in range(3)]
    old = {
        run_id: (
            await store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="r-1", lease_ttl=TTL), metadata=user)
        ).run
        for run_id in mine
    }
    # Live leases: another holder never gets them, reclaim_held or not; nor does their holder without it.
    assert not await _claim_runs(store, "r-2", reclaim_held=True) & set(mine)
    assert not await _claim_runs(store, "r-1", reclaim_held=False) & set(mine)
    assert set(mine) <= await _claim_runs(store, "r-1", reclaim_held=True)
    for run_id in mine:
        run = (await store.runs.GetRun(pb.GetRunRequest(id=run_id), metadata=user)).run
        assert run.lease_epoch == old[run_id].lease_epoch + 1  # every claim, the holder's own too, bumps it
        late = pb.AppendRunEventsRequest(
            run_id=run_id, lease_epoch=old[run_id].lease_epoch, events=[ev.RunEvent(text_delta=ev.TextDelta(text="x"))]
        )
        assert await _reason(store.runs.AppendRunEvents(late, metadata=user)) == "LEASE_LOST"
    # Held again, under the new epochs: a second holder still gets none of them.
    assert not await _claim_runs(store, "r-2", reclaim_held=True) & set(mine)
