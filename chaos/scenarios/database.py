"""F7: Postgres crashes under streaming runs and starts again.

The scenario runs its own Postgres cluster (chaos/postgres.py), whatever database the suite was asked for: the
store, the provider and confirm use it. Every run streams the fake upstream's answer (60 pieces, 50 ms apart: three
seconds) and is followed by a client that resumes by itself. While every run is streaming, Postgres is stopped with
`pg_ctl stop -m immediate` (every server process quits at once, no checkpoint: a crash), stays away for the outage
(3 s at PR scale, 5 s at full), and starts again, recovering from its WAL.

Pass: every run's first new event arrives within 10 s after Postgres is back (the services use their pools again:
dead connections are dropped, not handed out); every run completes; no event a client saw is lost (each is in the
final log with the same seq and type: what the store acknowledged was committed); the store's table holds no two
events with the same (run_id, seq); and every answer is stored exactly once and equals the upstream's.

Without initdb and pg_ctl on the machine the scenario records why it did not run (`skipped`) and passes.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from chaos.checks import integrity, next_event_after, record_integrity
from chaos.drive import (
    Followed,
    client_for,
    eventually,
    follow,
    start_runs,
)
from chaos.postgres import PostgresCluster, PostgresMissingError, postgres_cluster
from chaos.scenario import Context, Result, scenario
from chaos.stack import StackOptions, expected_text, process_stack
from steward.client import AsyncClient

PIECES, CHUNK_DELAY = 60, 0.05
OUTAGE = {"pr": 3.0, "full": 5.0}  # seconds Postgres stays down
NEXT_EVENT_BOUND = 10.0  # after Postgres is back: every run's next event


@scenario("F7", "Postgres crash-restart (pg_ctl stop -m immediate) under streaming runs")
async def postgres_crashed(context: Context, result: Result) -> None:
    result.database = "postgres"  # its own cluster, whatever the suite was asked for
    try:
        async with postgres_cluster() as cluster:
            await _crash_under_load(context, result, cluster)
    except PostgresMissingError as exc:
        result.figure("skipped", str(exc))


async def _crash_under_load(context: Context, result: Result, cluster: PostgresCluster) -> None:
    options = StackOptions(database_url=cluster.url, pieces=PIECES, chunk_delay=CHUNK_DELAY)
    data_dir = context.data_dir / f"{result.name}-postgres"
    data_dir.mkdir(parents=True)
    async with process_stack(data_dir, options) as stack, client_for(stack) as client:
        runs = await start_runs(client, context.scale.runs)
        follow(client, runs)
        streaming = await eventually(lambda: all(run.count("text_delta") > 0 for run in runs), 30)
        result.expect(streaming, "not every run was streaming within 30 s")
        await cluster.stop_immediate()
        await asyncio.sleep(OUTAGE.get(context.scale.name, OUTAGE["pr"]))
        began = time.monotonic()
        await cluster.start()
        back = time.monotonic()
        result.figure("outage_s", OUTAGE.get(context.scale.name, OUTAGE["pr"]))
        result.figure("postgres_start_s", back - began)
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), 120)
        result.expect(ended, "some runs had not ended 120 s after Postgres was back")
        await _check_runs(client, result, runs, back)
        await _check_table(cluster, result)


async def _check_runs(client: AsyncClient, result: Result, runs: list[Followed], back: float) -> None:
    record_integrity(result, await integrity(client, runs, expected_text(PIECES)))
    going, worst = next_event_after(runs, back)  # a run that had ended by then has no next event to wait for
    result.figure("still_going_when_back", going)
    result.figure("next_event_after_back_max_s", worst)
    result.expect(
        worst <= NEXT_EVENT_BOUND,
        f"a run's next event came {worst:.1f} s after Postgres was back (bound {NEXT_EVENT_BOUND} s)",
    )


async def _check_table(cluster: PostgresCluster, result: Result) -> None:
    """Duplicates in the store's event table itself, whatever the API shows."""
    connection = await asyncpg.connect(cluster.dsn, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT run_id, seq, count(*) FROM run_events GROUP BY run_id, seq HAVING count(*) > 1"
        )
    finally:
        await connection.close()
    result.figure("duplicate_run_seq", len(rows))
    result.expect(not rows, f"{len(rows)} (run_id, seq) pairs appear more than once in run_events")
