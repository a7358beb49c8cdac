"""`steward keys set|list|delete`: the instance's provider keys on a running stack, over the admin API.

Instance keys serve every user who has no key of their own for a provider. Only administrators may manage them
(the dev user, and the users in the gateway's `STEWARD_ADMIN_USERS`); the CLI authenticates like `steward token`
(`$STEWARD_TOKEN`, else the dev token in `<data dir>/secrets/dev-token`). A secret is read from standard input
(or from the variable `--from-env` names), never from the command line, where other users' `ps` would see it;
it is never printed. Setting a provider's key again rotates it (same id).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from pathlib import Path
from typing import IO, Any

from cli.tokens import DEFAULT_URL, CliError, bearer, call


def add_parser(commands: Any) -> None:
    """Add `keys` and its subcommands to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("STEWARD_URL", DEFAULT_URL), help=f"(default: {DEFAULT_URL})")
    common.add_argument("--data-dir", type=Path, default=Path("data"), help="where the dev token is (default: ./data)")
    keys = commands.add_parser("keys", help="set, list, rotate and delete the instance's provider keys (admins)")
    actions = keys.add_subparsers(dest="action", required=True)
    put = actions.add_parser(
        "set", parents=[common], help="set or rotate the instance key of a provider; the secret is read from stdin"
    )
    put.add_argument("provider", help="anthropic, openai, openai-compatible, or an upstream of the routes file")
    put.add_argument("--label", default="cli", help="a name to recognise the key by (default: cli)")
    put.add_argument("--from-env", metavar="VAR", help="read the secret from this environment variable instead")
    actions.add_parser("list", parents=[common], help="list the instance's keys (never their text)")
    delete = actions.add_parser("delete", parents=[common], help="delete an instance key by id")
    delete.add_argument("id")


def _secret(args: argparse.Namespace, stdin: IO[str]) -> str:
    secret = os.environ.get(args.from_env, "") if args.from_env else stdin.readline()
    secret = secret.strip()
    if not secret:
        raise CliError(f"no secret: {'$' + args.from_env + ' is empty' if args.from_env else 'stdin was empty'}")
    return secret


def _line(key: dict[str, Any]) -> str:
    return (
        f"{key['id']}  {key['provider']:<18}  ...{key['last4'] or '????'}  updated {key['update_time']}  {key['label']}"
    )


def run(args: argparse.Namespace, out: IO[str] | None = None, stdin: IO[str] | None = None) -> int:
    """Run one `keys` subcommand; 0 on success, 1 with a message on stderr otherwise."""
    out = out or sys.stdout
    try:
        token = bearer(args.data_dir)
        if args.action == "set":
            body = {"provider": args.provider, "secret": _secret(args, stdin or sys.stdin), "label": args.label}
            print(_line(call(args.url, token, "POST", "/api/v1/admin/keys", body)), file=out)
        elif args.action == "list":
            for key in call(args.url, token, "GET", "/api/v1/admin/keys?page_size=500")["keys"]:
                print(_line(key), file=out)
        else:
            call(args.url, token, "DELETE", f"/api/v1/admin/keys/{urllib.parse.quote(args.id, safe='')}")
            print(f"deleted {args.id}", file=out)
    except CliError as exc:
        print(f"steward keys: {exc}", file=sys.stderr)
        return 1
    return 0
