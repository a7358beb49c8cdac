"""The checks the fault scenarios share, on what the clients saw of their runs and what the store kept.

- every run completed;
- the client saw its events 1, 2, 3, ... with no gap, and so does the stored log read back (the store keeps one
  event per sequence number and the client drops a replayed one, so an event written twice shows as content:
  a step's text twice in the answer, an event that happens once per run counted twice);
- each run's conversation holds that run alone (a create sent again after a 503 made no second run);
- the answer stored in the conversation, and the one a reader builds from the deltas, is the upstream's exactly
  once (runs on the fake upstream);
- no client stream broke off;
- after a moment (a process back, a path healed), every run still going sent its next event within a bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaos.drive import Followed, answer, log_faults, text_after_last_restart
from chaos.scenario import Result
from steward.client import AsyncClient

__all__ = ["Integrity", "integrity", "next_event_after", "once_per_run", "record_integrity"]


@dataclass
class Integrity:
    runs: int = 0
    completed: int = 0
    restarted: int = 0  # runs with a step_restarted event
    client_gaps: int = 0
    log_gaps: int = 0
    log_duplicates: int = 0
    seen_lost: int = 0  # events a client saw that the final log does not hold with the same seq and type
    wrong_answers: int = 0  # None expected: not counted
    extra_runs: int = 0  # runs in the runs' conversations beyond their own (a create made twice)
    create_retries: int = 0  # creates sent again after a 503
    errors: list[str] = field(default_factory=list)  # the client streams that broke off


async def integrity(client: AsyncClient, runs: list[Followed], expected: str | None) -> Integrity:
    """What the clients saw of `runs` and what the store kept of them; `expected`: every run's answer (None: the
    answers are not checked)."""
    found = Integrity(runs=len(runs))
    for run in runs:
        found.completed += run.end_type == "run_completed"
        found.restarted += run.count("step_restarted") > 0
        found.client_gaps += log_faults([event.seq for event in run.events])[0]
        log = [event async for event in client.runs.events(run.run_id)]
        log_gaps, log_duplicates = log_faults([event.seq for event in log])
        found.log_gaps += log_gaps
        found.log_duplicates += log_duplicates
        kinds = {event.seq: event.type for event in log}
        found.seen_lost += sum(1 for event in run.events if kinds.get(event.seq) != event.type)
        if expected is not None:
            stored = await answer(client, run.conversation_id)
            found.wrong_answers += stored != [expected] or text_after_last_restart(run.events) != expected
        found.extra_runs += len([item async for item in client.runs.list(conversation_id=run.conversation_id)]) - 1
        found.create_retries += run.create_attempts - 1
        if run.error:
            found.errors.append(f"run {run.run_id}: the client's stream ended with {run.error}")
    return found


def record_integrity(result: Result, found: Integrity, prefix: str = "") -> None:
    """`found`'s figures (named with `prefix`) and failures on `result`."""
    result.figure(f"{prefix}runs", found.runs)
    result.figure(f"{prefix}completed", found.completed)
    result.figure(f"{prefix}step_restarted", found.restarted)
    result.figure(f"{prefix}client_gaps", found.client_gaps)
    result.figure(f"{prefix}log_gaps", found.log_gaps)
    result.figure(f"{prefix}wrong_answers", found.wrong_answers)
    if found.create_retries:
        result.figure(f"{prefix}create_retries", found.create_retries)
    result.expect(not found.extra_runs, f"{found.extra_runs} runs were created twice ({prefix}runs)")
    missing = found.runs - found.completed
    result.expect(not missing, f"{missing} of {found.runs} {prefix}runs did not complete")
    result.expect(
        found.client_gaps == 0 and found.log_gaps == 0 and found.log_duplicates == 0,
        f"{found.client_gaps} gaps seen by clients, {found.log_gaps} gaps and {found.log_duplicates} duplicates "
        f"in the stored logs ({prefix}runs)",
    )
    result.figure(f"{prefix}seen_events_lost", found.seen_lost)
    result.expect(not found.seen_lost, f"{found.seen_lost} events clients saw are not in the final logs ({prefix}runs)")
    result.expect(found.wrong_answers == 0, f"{found.wrong_answers} {prefix}runs' answers were not the upstream's once")
    result.failures.extend(found.errors)


def next_event_after(runs: Iterable[Followed], moment: float) -> tuple[int, float]:
    """(runs still going at `moment`, the most seconds any of them took from it to its next event: inf when one
    sent none). A run that had ended by then has no next event."""
    going = [run for run in runs if not (run.arrivals and run.ended and run.arrivals[-1] <= moment)]
    nexts = [run.first_after(moment) for run in going]
    return len(going), max((value if value is not None else math.inf for value in nexts), default=0.0)


def once_per_run(runs: list[Followed], kinds: Iterable[str]) -> list[str]:
    """A failure for every run in which an event of one of `kinds` (one that happens once per run) did not appear
    exactly once."""
    failures = []
    for run in runs:
        counts = {kind: run.count(kind) for kind in kinds}
        wrong = {kind: count for kind, count in counts.items() if count != 1}
        if wrong:
            failures.append(f"run {run.run_id}: events that happen once happened {wrong} times")
    return failures
