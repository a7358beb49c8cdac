"""`steward` entry point: argument parsing only."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cli import agents, keys, tokens
from cli.supervisor import Supervisor
from steward.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steward", description="Steward: a self-hostable agent runtime.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the whole stack on embedded defaults")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="where embedded state lives (default: ./data)")
    up.add_argument("--host", default="127.0.0.1", help="gateway listen address (default: 127.0.0.1)")
    up.add_argument("--port", type=int, default=8080, help="gateway port; 0 picks a free one (default: 8080)")
    up.add_argument("--verbose", action="store_true", help="show the services' logs here instead of in data/logs")
    up.add_argument(
        "--fake-llm", action="store_true", help="route the default agent to a local fake OpenAI-compatible upstream"
    )
    tokens.add_parser(commands)
    keys.add_parser(commands)
    agents.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        # The supervisor's terminal shows what a person must act on: warnings and errors, as readable lines.
        configure_logging("cli", "WARNING", json=False)
        supervisor = Supervisor(
            args.data_dir, host=args.host, port=args.port, verbose=args.verbose, fake_llm=args.fake_llm
        )
        return asyncio.run(supervisor.run())
    if args.command == "token":
        return tokens.run(args)
    if args.command == "keys":
        return keys.run(args)
    if args.command == "agents":
        return agents.run(args)
    return 2
