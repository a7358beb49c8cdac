"""Scenario L2, the reconnect storm, bounded: 20 runs' event streams dropped every 1-3 s for 15 s and resumed with
`Last-Event-ID`, against every process as deployed (bench.gateway_stack).

Every stream reads each of its run's events exactly once, in order, to the run's end, and every resume starts
just after its cursor. The latency bound here is loose (p99 <= 2 s, for a loaded CI machine); the 500 ms target
belongs to the full scenario, `python -m chaos.storm` (docs/perf/2026-12-07-reconnect-storm.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gateway_stack import gateway_stack
from chaos.storm import reconnect_storm, storm_upstream

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

STREAMS = 20
DURATION = 15.0
DROP_EVERY = (1.0, 3.0)


async def test_a_reconnect_storm_loses_nothing_repeats_nothing_and_resumes_from_the_cursor(tmp_path: Path) -> None:
    async with gateway_stack(tmp_path, [storm_upstream(DURATION)]) as stack:
        result = await reconnect_storm(
            stack.url, stack.dev_token, streams=STREAMS, duration=DURATION, drop_every=DROP_EVERY, seed=7
        )
    print(result.summary())
    assert result.streams == STREAMS
    assert result.resumes >= STREAMS * 3, result.summary()  # each stream dropped about every 2.6 s
    assert result.events >= STREAMS * DURATION * 3, result.summary()  # an event every 0.2 s, each
    assert (result.gaps, result.duplicates, result.off_cursor, result.unfinished) == (0, 0, 0, 0), result.summary()
    assert result.p99 <= 2.0, result.summary()
