"""L2, the reconnect storm, as a registered scenario over `chaos.stack` (the storm itself: chaos/storm.py).

The fake upstream sends a text piece every `EVENT_INTERVAL` seconds for longer than the storm; `streams` runs are
followed, each connection dropped at a random moment every 1-5 s and resumed with `Last-Event-ID`. Pass: no gap, no
duplicate, every resume from its cursor, every stream read to its end; p99 from reconnect to first event within
0.5 s at full scale (100 streams), 2 s at PR scale (a test machine shared with the rest of the suite).
"""

from __future__ import annotations

from chaos.scenario import FULL, Context, Result, scenario
from chaos.stack import FAKE_ROUTE, StackOptions, process_stack
from chaos.storm import EVENT_INTERVAL, TARGET_P99, reconnect_storm

DROP_EVERY = (1.0, 5.0)
PR_P99 = 2.0


@scenario("L2", "reconnect storm: streams dropped at random and resumed with Last-Event-ID")
async def storm(context: Context, result: Result) -> None:
    duration = context.scale.storm_seconds
    pieces = int((duration + 300) / EVENT_INTERVAL)  # answers outlast the storm; it cancels its runs at the end
    # Every stream's run is driven at once: past the runtime's max_active_runs (64 by default) runs wait queued,
    # and their streams would stay silent until the storm cancels the others.
    runtime = {"max_active_runs": max(64, context.scale.streams)}
    options = StackOptions(
        database_url=context.database_url, pieces=pieces, chunk_delay=EVENT_INTERVAL, runtime=runtime
    )
    async with process_stack(context.data_dir, options) as stack:
        seen = await reconnect_storm(
            stack.url,
            stack.dev_token,
            streams=context.scale.streams,
            duration=duration,
            drop_every=DROP_EVERY,
            seed=context.seed,
            route=FAKE_ROUTE,
        )
    for name in ("streams", "events", "resumes", "gaps", "duplicates", "off_cursor", "unfinished", "errors"):
        result.figure(name, getattr(seen, name))
    result.figure("resume_p50_ms", round(seen.p50 * 1000))
    result.figure("resume_p99_ms", round(seen.p99 * 1000))
    bound = TARGET_P99 if context.scale is FULL else PR_P99
    clean = (seen.gaps, seen.duplicates, seen.off_cursor, seen.unfinished) == (0, 0, 0, 0)
    result.expect(clean, f"the storm lost or repeated events: {seen.summary()}")
    result.expect(seen.resumes >= seen.streams, f"too few resumes to judge: {seen.summary()}")
    result.expect(seen.errors == 0, f"streams stalled or answered an error: {seen.summary()}")
    result.expect(seen.p99 <= bound, f"p99 from reconnect to first event {seen.p99 * 1000:.0f} ms (bound {bound} s)")
