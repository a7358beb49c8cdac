"""A run paused on a confirmation holds no lease and no task, end to end through the real services.

The lease's holder and expiry are not in the Run message (only its epoch is), so they are read from the store's
own database (its `runs` row), as the store keeps them. The runtime's task for a run is the asyncio task that
drives it (services/runtime/run/loop.py: one task per run this replica holds); a hook running in it, at the model
call, captures it, so the test can see that very task end, and that no task for the run is left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from services.runtime.hooks import Hook, ModelRequest, StepInfo
from services.store.db.models import RunRow
from steward.db import READ_ONLY, create_engine, create_sessionmaker
from steward.store.v1 import run_pb2
from tests.runtime.harness import world
from tests.runtime.procs import eventually

REPLICA = "runtime-paused-runs-test"


@dataclass(frozen=True)
class Lease:
    holder: str
    expire_time: datetime | None
    epoch: int


async def stored_lease(data_dir: Path, run_id: str) -> Lease:
    """The run's lease as the store's database holds it (the store's SQLite file in the data directory)."""
    engine = create_engine(f"sqlite+aiosqlite:///{(data_dir / 'steward.db').resolve()}")
    try:
        reads = create_sessionmaker(engine.execution_options(**{READ_ONLY: True}))
        async with reads() as session, session.begin():
            row = await session.get(RunRow, run_id)
            assert row is not None, run_id
            expire = row.lease_expire_time
            if expire is not None and expire.tzinfo is None:
                expire = expire.replace(tzinfo=UTC)  # SQLite keeps no zone; the store writes UTC
            return Lease(row.lease_holder, expire, row.lease_epoch)
    finally:
        await engine.dispose()


def run_tasks(run_id: str) -> list[asyncio.Task[object]]:
    """The live asyncio tasks of this process that drive the run (named as the runtime names them)."""
    return [task for task in asyncio.all_tasks() if task.get_name() == f"run-{run_id}" and not task.done()]


@dataclass
class Drivers(Hook):
    """At every model call: the task making it, and the run's lease as the store has it then."""

    data_dir: Path
    tasks: dict[str, list[asyncio.Task[object]]] = field(default_factory=dict)
    leases: dict[str, list[Lease]] = field(default_factory=dict)

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        run_id = step.run.id
        task = asyncio.current_task()
        assert task is not None
        self.tasks.setdefault(run_id, []).append(task)
        self.leases.setdefault(run_id, []).append(await stored_lease(self.data_dir, run_id))


async def test_a_run_paused_on_a_confirmation_holds_no_lease_and_no_task(tmp_path: Path) -> None:
    drivers = Drivers(tmp_path)
    async with world(tmp_path, hooks=[drivers], replica_id=REPLICA, lease_seconds=30) as running:
        run = await running.start_run("create_note Something")
        paused = await running.wait(run.id, paused=True)
        assert (paused.state, paused.pause_reason) == (
            run_pb2.RUN_STATE_PAUSED,
            run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION,
        )

        # While it ran, the run was held: this replica's lease, live, in the task named for the run.
        [driving] = drivers.tasks[run.id]
        [held] = drivers.leases[run.id]
        assert held.holder == REPLICA
        assert held.expire_time is not None
        assert held.expire_time > datetime.now(UTC)
        assert driving.get_name() == f"run-{run.id}"

        # Paused: no holder, no expiry, and nobody claimed it since (same epoch).
        lease = await stored_lease(tmp_path, run.id)
        assert lease == Lease(holder="", expire_time=None, epoch=held.epoch), lease
        assert paused.lease_epoch == held.epoch
        # The task that drove it ends (after one look for a decision already made) and none is left for the run.
        await eventually(driving.done, within=10, what="the run's task to end once the run paused")
        assert not driving.cancelled()
        assert driving.exception() is None
        assert run_tasks(run.id) == []
        assert (await running.run(run.id)).state == run_pb2.RUN_STATE_PAUSED

        # A decision brings it back under a new lease, in a new task.
        confirmation = await running.pending_confirmation(run.id)
        await running.decide(confirmation.id, {"outcome": "approve"})
        ended = await running.wait(run.id)
        assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
        resumed = drivers.tasks[run.id][-1]
        assert resumed is not driving
        assert drivers.leases[run.id][-1].holder == REPLICA
        assert drivers.leases[run.id][-1].epoch == held.epoch + 1
        await eventually(resumed.done, within=10, what="the resumed run's task to end")
        assert run_tasks(run.id) == []
