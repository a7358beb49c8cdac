"""ClaimRuns with reclaim_held: a replica restarted under the same holder takes back the runs it held, each with a
new epoch that fences its previous start; it never takes a live run another holder holds. A sweep names the runs
its caller drives (driven_ids), which it never takes from it, even once their leases expired."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from sqlalchemy import update

from services.store.db.models import RunRow
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as pb
from steward.timeutil import now
from tests.store.conftest import StoreUnderTest, direct_sessions
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


async def test_a_sweep_never_claims_the_runs_its_caller_drives_though_their_leases_expired(
    store: StoreUnderTest,
) -> None:
    user = store.user()
    driven, other = await _queued_run(store, user), await _queued_run(store, user)
    held = {
        run_id: (
            await store.runs.ClaimRun(pb.ClaimRunRequest(id=run_id, holder="r-1", lease_ttl=TTL), metadata=user)
        ).run
        for run_id in (driven, other)
    }
    async with direct_sessions(store) as sessions, sessions() as session, session.begin():  # cut off past the lease
        expired = now() - timedelta(seconds=1)
        await session.execute(update(RunRow).where(RunRow.id.in_(held)).values(lease_expire_time=expired))
    service = store.service("runtime")
    sweep = pb.ClaimRunsRequest(holder="r-1", max_runs=100, lease_ttl=TTL, driven_ids=[driven])
    claimed = {run.id for run in (await store.runs.ClaimRuns(sweep, metadata=service)).runs}
    assert driven not in claimed  # its task goes on: the heartbeat renews the lease under the epoch it holds
    assert other in claimed  # a run its holder no longer drives is taken, as before
    beat = pb.HeartbeatRunRequest(id=driven, lease_epoch=held[driven].lease_epoch, lease_ttl=TTL)
    await store.runs.HeartbeatRun(beat, metadata=user)
    # Another holder takes an expired run whatever the caller drives; a list too long is refused.
    async with direct_sessions(store) as sessions, sessions() as session, session.begin():
        await session.execute(update(RunRow).where(RunRow.id == driven).values(lease_expire_time=now()))
    taken = pb.ClaimRunsRequest(holder="r-2", max_runs=100, lease_ttl=TTL)
    assert driven in {run.id for run in (await store.runs.ClaimRuns(taken, metadata=service)).runs}
    many = pb.ClaimRunsRequest(holder="r-1", max_runs=1, lease_ttl=TTL, driven_ids=["x"] * 10_001)
    assert await _reason(store.runs.ClaimRuns(many, metadata=service)) == "INVALID_ARGUMENT"
