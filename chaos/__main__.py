"""`python -m chaos [--scale pr|full] [--db sqlite|postgres|both] [--write FILE] [SCENARIO ...]`

Runs the named scenarios (all by default) over the real stack, prints each one's figures and PASS/FAIL, and exits 1
when any failed. `--write` appends the results to a Markdown file (the dated record in docs/perf/).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import structlog

import chaos.scenarios  # noqa: F401 - registers the scenarios
from chaos.scenario import FULL, PR, SCENARIOS, Context, Result, run_scenario
from tests.support.pg import create_scratch_database  # a scratch database per scenario (STEWARD_TEST_POSTGRES_DSN)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--scale", choices=["pr", "full"], default="full")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> list[Result]:
    names = args.scenarios or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    engines = {"sqlite": [False], "postgres": [True], "both": [False, True]}[args.db]
    scale = FULL if args.scale == "full" else PR
    results = []
    with tempfile.TemporaryDirectory(prefix="steward-chaos-") as scratch:
        for postgres in engines:
            for name in names:
                data_dir = Path(scratch) / f"{name}-{'pg' if postgres else 'sqlite'}"
                data_dir.mkdir()
                database_url = await create_scratch_database() if postgres else ""
                context = Context(data_dir, scale, database_url, args.seed)
                result = await run_scenario(name, context)
                print(result.report(), flush=True)
                results.append(result)
    return results


def _markdown(results: list[Result], args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Chaos run, {now} (scale {args.scale}, seed {args.seed})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| scenario | database | result | figures |",
        "|---|---|---|---|",
    ]
    for result in results:
        figures = ", ".join(f"{name}={value}" for name, value in result.figures.items())
        outcome = "PASS" if result.passed else "FAIL: " + "; ".join(result.failures)
        lines.append(f"| {result.name}: {result.title} | {result.database} | {outcome} | {figures} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # The harness's own probes log refused connections at debug level while a process is away: only warnings show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = asyncio.run(_run(args))
    failed = [result for result in results if not result.passed]
    print(f"chaos: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    if args.write is not None:
        with args.write.open("a") as handle:
            handle.write("\n" + _markdown(results, args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
