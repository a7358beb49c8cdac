"""`steward agents apply|export|tools`: keep agents as files (docs/agents.md) on a running stack, over HTTP.

`apply -f FILE_OR_DIR` sends the files (a folder's `*.yaml`, `*.yml` and `*.json`, not its subfolders) to
POST /api/v1/agents/apply: every agent is created, updated (its version goes up) or left unchanged, all or none.
`export NAME` prints the agent as an agent file; applying that file changes nothing. `tools NAME_OR_ID` lists what
the agent may call, read or write and why. It authenticates like `steward token` (`$STEWARD_TOKEN`, else the dev
token of `--data-dir`) and talks through the Python client library (`steward.client`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import IO, Any

import yaml

from cli.tokens import DEFAULT_URL, CliError, bearer
from steward.client import Client, StewardAPIError, StewardClientError

SUFFIXES = (".yaml", ".yml", ".json")
# An agent file's fields in the order `export` writes them (the long system prompt last).
FIELD_ORDER = ("name", "description", "model_route", "tools", "approval_policy", "limits", "model_params")
READ_ONLY_FIELDS = frozenset({"id", "version", "create_time", "update_time"})


def add_parser(commands: Any) -> None:
    """Add `agents` and its subcommands to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("STEWARD_URL", DEFAULT_URL), help=f"(default: {DEFAULT_URL})")
    common.add_argument("--data-dir", type=Path, default=Path("data"), help="where the dev token is (default: ./data)")
    agents = commands.add_parser("agents", help="apply agent files, export agents as files, list an agent's tools")
    actions = agents.add_subparsers(dest="action", required=True)
    apply = actions.add_parser("apply", parents=[common], help="create or update agents from agent files, all or none")
    apply.add_argument(
        "-f", dest="paths", action="append", required=True, type=Path, metavar="FILE_OR_DIR", help="(repeatable)"
    )
    apply.add_argument("--dry-run", action="store_true", help="check and compare only; change nothing")
    export = actions.add_parser("export", parents=[common], help="print an agent as an agent file (YAML)")
    export.add_argument("name")
    export.add_argument("-o", dest="output", type=Path, metavar="FILE", help="write it to FILE, not to stdout")
    tools = actions.add_parser("tools", parents=[common], help="list the tools an agent may call, read or write")
    tools.add_argument("agent", help="the agent's name or id; `steward` is the default agent")


def agent_files(paths: list[Path]) -> dict[str, str]:
    """{name: text} of the agent files `paths` name: files as given, folders' agent files by name."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
                if not files:
                    raise CliError(f"{path}: no agent files (*.yaml, *.yml, *.json)")
            else:
                files = [path]
            for file in files:
                found[str(file)] = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{path}: {exc.strerror or exc}") from None
    return found


def _pruned(value: Any) -> Any:
    """`value` without nulls and empty lists or mappings (an agent file leaves defaults out)."""
    if isinstance(value, dict):
        kept = {key: _pruned(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item is not None and item != [] and item != {}}
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a system prompt) as a `|` block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def agent_file(agent: dict[str, Any]) -> str:
    """An agent's JSON as the text of an agent file: its fields in a stable order, defaults left out."""
    fields = _pruned({key: value for key, value in agent.items() if key not in READ_ONLY_FIELDS})
    ordered = {key: fields[key] for key in FIELD_ORDER if key in fields}
    ordered.update((key, value) for key, value in fields.items() if key not in ordered)
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def _find(client: Client, name: str) -> dict[str, Any]:
    for agent in client.agents.list(page_size=500):
        if agent.name == name:
            return agent.json
    raise CliError(f"you have no agent named {name!r}")


def _apply(client: Client, args: argparse.Namespace, out: IO[str]) -> None:
    files = agent_files(args.paths)
    try:
        results = client.apply_agents(files, validate_only=args.dry_run)
    except StewardAPIError as error:
        if not error.errors:
            raise
        for item in error.errors:
            where = item.get("file") or "request"
            if item.get("document") is not None:
                where += f" (document {item['document']})"
            field = f"{item['field']}: " if item.get("field") else ""
            print(f"{where}: {field}{item.get('detail')} [{item.get('reason')}]", file=sys.stderr)
        raise CliError(f"nothing was applied ({error.reason})") from None
    for result in results:
        would = "would be " if args.dry_run else ""
        version = f"v{result.agent.version}" if result.agent.id else "new"
        line = f"{would}{result.result:<9}  {result.agent.name}  {version}  ({result.file}, document {result.document})"
        print(line, file=out)


def _tools(client: Client, agent: str, out: IO[str]) -> None:
    agent_id = agent if agent == "steward" else _agent_id(client, agent)
    for tool in client.list_tools(agent_id):
        confirm = "confirm" if tool.needs_confirmation else "at once"
        print(f"{tool.name:<32} {tool.kind:<6} {confirm:<8} {tool.reason or '-':<17} {tool.explanation}", file=out)


def _agent_id(client: Client, name_or_id: str) -> str:
    for agent in client.agents.list(page_size=500):
        if name_or_id in (agent.name, agent.id):
            return agent.id
    raise CliError(f"you have no agent named {name_or_id!r}")


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run one `agents` subcommand; 0 on success, 1 with a message on stderr otherwise."""
    out = out or sys.stdout
    try:
        with Client(args.url, bearer(args.data_dir)) as client:
            if args.action == "apply":
                _apply(client, args, out)
            elif args.action == "export":
                text = agent_file(_find(client, args.name))
                if args.output is None:
                    out.write(text)
                else:
                    args.output.write_text(text, encoding="utf-8")
            else:
                _tools(client, args.agent, out)
    except CliError as exc:
        print(f"steward agents: {exc}", file=sys.stderr)
        return 1
    except StewardClientError as exc:
        print(f"steward agents: {exc}", file=sys.stderr)
        return 1
    return 0
