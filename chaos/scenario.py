"""What a chaos scenario is: a coroutine over a `Context` that returns a `Result` (its figures and what failed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaos.stack import violations_under

__all__ = ["FULL", "PR", "SCENARIOS", "Context", "Result", "Scale", "Scenario", "run_scenario", "scenario"]


@dataclass(frozen=True)
class Scale:
    """How big a scenario runs: `PR` in the test suite (each well under a minute), `FULL` for `make chaos`."""

    name: str
    runs: int  # runs under load in a fault scenario
    outage: float  # seconds a killed process stays down
    partition: float  # seconds a partition lasts
    streams: int  # streams in the reconnect storm
    storm_seconds: float
    abandoned: int  # runs whose client leaves after the first event (L4)


PR = Scale("pr", runs=10, outage=2.0, partition=8.0, streams=20, storm_seconds=15.0, abandoned=30)
FULL = Scale("full", runs=20, outage=2.0, partition=30.0, streams=100, storm_seconds=60.0, abandoned=200)


@dataclass(frozen=True)
class Context:
    data_dir: Path
    scale: Scale
    database_url: str = ""  # empty: SQLite
    seed: int = 0

    @property
    def database(self) -> str:
        return "postgres" if self.database_url else "sqlite"


@dataclass
class Result:
    """A scenario's figures (in the order recorded) and its failures; it passes with none."""

    name: str
    title: str
    database: str
    figures: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def figure(self, name: str, value: object) -> None:
        self.figures[name] = round(value, 3) if isinstance(value, float) else value

    def expect(self, holds: bool, failure: str) -> None:
        if not holds:
            self.failures.append(failure)

    def report(self) -> str:
        figures = ", ".join(f"{name}={value}" for name, value in self.figures.items())
        head = f"{'PASS' if self.passed else 'FAIL'} {self.name} [{self.database}] {self.title}: {figures}"
        return "\n".join([head, *(f"    - {failure}" for failure in self.failures)])


Scenario = Callable[[Context, Result], Awaitable[None]]
SCENARIOS: dict[str, tuple[str, Scenario]] = {}


def scenario(name: str, title: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under `name` ("F3"); it records figures and failures on the `Result` it is given."""

    def register(run: Scenario) -> Scenario:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name} is registered twice")
        SCENARIOS[name] = (title, run)
        return run

    return register


async def run_scenario(name: str, context: Context) -> Result:
    title, run = SCENARIOS[name]
    result = Result(name, title, context.database)
    try:
        await run(context, result)
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks off fails with what broke it
        result.failures.append(f"broke off: {type(exc).__name__}: {exc}")
    violations = violations_under(context.data_dir)
    result.figure("answer_violations", len(violations))
    result.expect(not violations, f"answers broke the document or showed internals: {violations[:3]}")
    return result
