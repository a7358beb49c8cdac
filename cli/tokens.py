"""`steward token create|list|revoke`: manage your API tokens on a running stack over HTTP.

It authenticates with `$STEWARD_TOKEN` if set, else with the dev token `steward up` wrote to
`<data dir>/secrets/dev-token`. Blocking urllib is enough for one request per command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_SECONDS = 30.0


class _Refuse(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would send the Authorization header to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def add_parser(commands: Any) -> None:
    """Add `token` and its subcommands to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("STEWARD_URL", DEFAULT_URL), help=f"(default: {DEFAULT_URL})")
    common.add_argument("--data-dir", type=Path, default=Path("data"), help="where the dev token is (default: ./data)")
    token = commands.add_parser("token", help="create, list and revoke your API tokens on a running stack")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[common], help="create a token; its text is printed once")
    create.add_argument("--label", default="cli", help="a name to recognise the token by (default: cli)")
    create.add_argument("--ttl", type=int, default=None, metavar="SECONDS", help="expire after this many seconds")
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        default=None,
        metavar="SCOPE",
        help="limit the token to this scope (repeat for several, e.g. --scope runs:read --scope runs:write); "
        "without it the token has all your rights, or those of a scoped token it is made with",
    )
    actions.add_parser("list", parents=[common], help="list your tokens (never their text)")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a token by id")
    revoke.add_argument("id")


def bearer(data_dir: Path) -> str:
    given = os.environ.get("STEWARD_TOKEN", "").strip()
    if given:
        return given
    path = data_dir / "secrets" / "dev-token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        detail = f"{path}: {exc.strerror}"
        raise CliError(f"no token: set STEWARD_TOKEN or start the stack with `steward up` ({detail})") from None


def call(url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise CliError(f"--url must be an http(s) URL, not {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with _NO_REDIRECTS.open(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            reason, detail = problem.get("reason", "?"), problem.get("detail", "")
        except (ValueError, AttributeError):
            reason, detail = "?", exc.reason
        raise CliError(f"{method} {path}: {exc.code} {reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def _line(token: dict[str, Any]) -> str:
    expires = token.get("expire_time") or "never"
    scopes = ",".join(token.get("scopes") or []) or "all"
    state = f"{token['state']:<7}"
    return f"{token['id']}  {token['prefix']}  {state}  expires {expires}  scopes {scopes}  {token['label']}"


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run one `token` subcommand; 0 on success, 1 with a message on stderr otherwise."""
    out = out or sys.stdout
    try:
        token = bearer(args.data_dir)
        if args.action == "create":
            body: dict[str, Any] = {"label": args.label}
            if args.ttl is not None:
                body["ttl_seconds"] = args.ttl
            if args.scopes:
                body["scopes"] = args.scopes
            created = call(args.url, token, "POST", "/api/v1/tokens", body)
            print(f"token: {created['token']}", file=out)
            if created.get("scopes"):
                print(f"scopes: {' '.join(created['scopes'])}", file=out)
            print(f"id: {created['id']}  (the token is shown only this once)", file=out)
        elif args.action == "list":
            for item in call(args.url, token, "GET", "/api/v1/tokens?page_size=500")["tokens"]:
                print(_line(item), file=out)
        else:
            revoked = call(args.url, token, "DELETE", f"/api/v1/tokens/{urllib.parse.quote(args.id, safe='')}")
            print(f"revoked {revoked['id']}", file=out)
    except CliError as exc:
        print(f"steward token: {exc}", file=sys.stderr)
        return 1
    return 0
