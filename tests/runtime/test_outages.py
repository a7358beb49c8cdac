"""Outages of a dependency under streaming runs, on the real in-process stack (tests/support/stack.py): the provider
or the store stopped at once (its calls in flight cut off, new ones refused) and started again on the same port
~2 s later. No run fails: a model step cut off is restarted with backoff (`step_restarted`, so readers drop its
partial text), a write the store could not take is tried again, and every run completes with its answer once.

The services are stopped in-process (`GrpcServer.stop(0)`), which the runtime sees as a real kill shows it: the
stream ends UNAVAILABLE, then connections are refused until the port answers again."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from services.runtime.run import outage
from services.store.db.engine import create_engine, create_sessionmaker
from services.store.db.models import RunRow
from steward.common.v1 import content_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import ENDED, World, world
from tests.runtime.procs_client import text_after_last_restart

pytestmark = pytest.mark.timeout(90)

OUTAGE_SECONDS = 2.0
TOKEN_INTERVAL = 0.1  # the demo answer's ~30 tokens take ~3 s: every run is mid-stream when the outage starts
RUN_TIMEOUT = 120.0  # the outage, not the wall clock, is under test on a busy machine


async def _log(w: World, run_id: str) -> list[run_event_pb2.RunEvent]:
    stream = w.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=w.user)
    return [item.event async for item in stream]


async def _all_streaming(w: World, runs: list[run_pb2.Run], within: float = 30.0) -> None:
    """Return once every run's log has a text delta (its model step is mid-stream)."""
    deadline = time.monotonic() + within
    for run in runs:
        while not any(event.HasField("text_delta") for event in await _log(w, run.id)):
            assert time.monotonic() < deadline, f"run {run.id} streamed no text within {within}s"
            await asyncio.sleep(0.05)


async def _unfinished(w: World, runs: list[run_pb2.Run]) -> list[str]:
    return [run.id for run in runs if (await w.run(run.id)).state not in ENDED]


async def _assert_completed_once(w: World, run: run_pb2.Run, said: str) -> list[run_event_pb2.RunEvent]:
    """The run completed, its answer stored once in its conversation, as readers build it from the log; its log."""
    ended = await w.wait(run.id, within=60)
    assert run_pb2.RunState.Name(ended.state) == "RUN_STATE_COMPLETED", ended.error
    events = await _log(w, run.id)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert events[-1].HasField("run_completed")
    assistant = [m for m in await w.messages(run) if m.role == content_pb2.ROLE_ASSISTANT]
    assert len(assistant) == 1, assistant
    answer = "".join(block.text.text for block in assistant[0].content if block.HasField("text"))
    assert f'You said: "{said}"' in answer
    assert answer.count("offline demo model") == 1, answer
    assert text_after_last_restart(events) == answer  # the abandoned step's partial text is dropped by readers
    return events


async def test_a_provider_outage_under_ten_streaming_runs_fails_none(tmp_path: Path) -> None:
    async with world(tmp_path, demo_token_interval=TOKEN_INTERVAL, default_run_timeout=RUN_TIMEOUT) as w:
        runs = [await w.start_run(f"question {n}") for n in range(10)]
        await _all_streaming(w, runs)
        cut = await _unfinished(w, runs)
        await w.stack.outage("provider", OUTAGE_SECONDS)
        assert cut, "every run ended before the outage: nothing was under test"
        for n, run in enumerate(runs):
            events = await _assert_completed_once(w, run, f"question {n}")
            if run.id in cut:
                restarted = [event for event in events if event.HasField("step_restarted")]
                assert restarted, f"run {run.id} was cut off mid-stream but its step was not restarted"
                assert all(event.step == 1 for event in restarted)
            assert not any(event.HasField("run_failed") for event in events)


async def test_a_store_outage_under_streaming_runs_records_no_failure(tmp_path: Path) -> None:
    async with world(tmp_path, demo_token_interval=TOKEN_INTERVAL, default_run_timeout=RUN_TIMEOUT) as w:
        runs = [await w.start_run(f"note {n}") for n in range(3)]
        await _all_streaming(w, runs)
        assert await _unfinished(w, runs), "every run ended before the outage: nothing was under test"
        await w.stack.outage("store", OUTAGE_SECONDS)
        for n, run in enumerate(runs):
            events = await _assert_completed_once(w, run, f"note {n}")
            assert not any(event.HasField("run_failed") for event in events)
            # Driven to its end by the claim the outage hit: its writes waited for the store. (Before, the claim
            # decided the run failed, could not record it, and the run waited for its lease to expire and for a
            # takeover: another epoch, a step_restarted.)
            assert (await w.run(run.id)).lease_epoch == run.lease_epoch == 1
            assert not any(event.HasField("step_restarted") for event in events)


async def test_a_provider_away_past_the_bound_gives_the_run_back_and_it_completes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outage, "OUTAGE_BOUND", 1.0)  # read by each outage when it starts
    async with world(tmp_path, demo_token_interval=TOKEN_INTERVAL, default_run_timeout=RUN_TIMEOUT) as w:
        run = await w.start_run("still there?")
        await _all_streaming(w, [run])
        port = await w.stack.stop_service("provider")
        # Given back after the bound, claimed again by the sweep (a new epoch), given back again: never failed.
        deadline = time.monotonic() + 30
        while (now := await w.run(run.id)).lease_epoch < 3:
            assert now.state not in ENDED, now
            assert time.monotonic() < deadline, f"the run was not given back: {now}"
            await asyncio.sleep(0.05)
        await w.stack.start_service("provider", port)
        events = await _assert_completed_once(w, run, "still there?")
        assert not any(event.HasField("run_failed") for event in events)
        assert (await w.run(run.id)).lease_epoch >= 3


async def test_while_the_provider_is_away_cancel_and_the_wall_clock_still_end_the_run(tmp_path: Path) -> None:
    async with world(tmp_path, demo_token_interval=TOKEN_INTERVAL, default_run_timeout=8.0) as w:
        cancelled, timed_out = await w.start_run("cancel me"), await w.start_run("time me out")
        await _all_streaming(w, [cancelled, timed_out])
        await w.stack.stop_service("provider")
        await w.runtime.CancelRun(runtime_pb.CancelRunRequest(id=cancelled.id), metadata=w.user)
        assert (await w.wait(cancelled.id, within=10)).state == run_pb2.RUN_STATE_CANCELLED
        ended = await w.wait(timed_out.id, within=30)
        assert (ended.state, ended.incomplete_reason) == (
            run_pb2.RUN_STATE_INCOMPLETE,
            run_pb2.INCOMPLETE_REASON_TIMEOUT,
        )


async def test_runs_whose_leases_expired_while_the_store_was_out_of_reach_are_not_taken_from_their_tasks(
    tmp_path: Path,
) -> None:
    # A replica cut off from the store longer than a lease (a partition: chaos F11) still drives its runs; the
    # leases expired in the store. Its own sweep (every 0.5 s here) must leave them to the tasks, whose next
    # heartbeat renews them, instead of claiming them and fencing the tasks (a step restarted, charged twice).
    async with world(tmp_path, demo_token_interval=TOKEN_INTERVAL, default_run_timeout=RUN_TIMEOUT) as w:
        runs = [await w.start_run(f"cut {n}") for n in range(3)]
        await _all_streaming(w, runs)
        engine = create_engine(f"sqlite+aiosqlite:///{(tmp_path / 'steward.db').resolve()}")
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                expired = datetime.now(UTC) - timedelta(seconds=1)
                ids = [run.id for run in runs]
                await session.execute(update(RunRow).where(RunRow.id.in_(ids)).values(lease_expire_time=expired))
        finally:
            await engine.dispose()
        assert await _unfinished(w, runs), "every run ended before its lease expired: nothing was under test"
        for n, run in enumerate(runs):
            events = await _assert_completed_once(w, run, f"cut {n}")
            assert (await w.run(run.id)).lease_epoch == run.lease_epoch == 1
            assert not any(event.HasField("step_restarted") for event in events)
