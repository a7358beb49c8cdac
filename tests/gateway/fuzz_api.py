"""Schema fuzzing of the HTTP API: schemathesis against a whole stack started as `make run` starts it.

    python -m tests.gateway.fuzz_api [--max-examples N] [--seed S]      (what `make fuzz-api` runs)

Starts `steward up` on a free port with a fresh data directory (rate limits off: the fuzzer is one user
making requests as fast as it can), then runs schemathesis from its own virtualenv (`.venv-fuzz`, made by
`make fuzz-api`: schemathesis's pins conflict with ours) against the served document
`/api/v1/openapi.json` with the dev token. Checks: no 5xx, and every answer's status code, content type
and body as the document says. Examples are bounded per operation, and the seed is fixed by default so a
run can be repeated; the exit code is schemathesis's. The stack is stopped afterwards, and the gateway's
log is searched for unhandled errors. Not a pytest module (it needs the other virtualenv and a stack of
processes); `make ci` runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = REPO / ".venv-fuzz" / "bin" / "schemathesis"
DOCUMENT_PATH = "/api/v1/openapi.json"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
RUNNING = re.compile(r"Steward is running at (\S+)")
STOP_TIMEOUT = 30.0


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """`steward up` in the background; its URL once it is ready."""
    # Answers checked by the gateway too: one that breaks the document or shows internals (an address, a port, a
    # gRPC message, a trace, a path) answers 500, which the fuzzer's not_a_server_error check reports.
    env = {**os.environ, "STEWARD_RATE_LIMIT_PER_SECOND": "0", "STEWARD_VALIDATE_RESPONSES": "1"}
    command = [sys.executable, "-m", "cli", "up", "--data-dir", str(data_dir), "--port", "0"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("dev token:"):
            continue  # never echoed: the log of a CI run is not the place for it
        print(f"stack: {line.rstrip()}", flush=True)
        found = RUNNING.search(line)
        if found:
            return process, found.group(1)
    _stop(process)
    raise SystemExit(f"fuzz-api: the stack did not start (exit code {process.returncode})")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _fuzz(url: str, token: str, max_examples: int, seed: int) -> int:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}{DOCUMENT_PATH}",
        "--url",
        url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
    ]
    print(f"fuzz-api: schemathesis against {url}{DOCUMENT_PATH} (max {max_examples} examples, seed {seed})")
    return subprocess.run(command, cwd=REPO, check=False).returncode


def _unhandled(data_dir: Path) -> list[str]:
    """Lines of the stack's logs that report an unhandled error (a 500 the fuzzer may not have been shown)."""
    found = []
    for log in sorted((data_dir / "logs").glob("*.log")):
        found += [f"{log.name}: {line}" for line in log.read_text(errors="replace").splitlines() if "unhandled" in line]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz_api", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "25")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "20261203")))
    args = parser.parse_args(argv)
    if not SCHEMATHESIS.exists():
        raise SystemExit(f"fuzz-api: {SCHEMATHESIS} is missing; run `make fuzz-api`, which creates it")
    with tempfile.TemporaryDirectory(prefix="steward-fuzz-") as tmp:
        data_dir = Path(tmp) / "data"
        process, url = _start(data_dir)
        try:
            token = (data_dir / "secrets" / "dev-token").read_text().strip()
            code = _fuzz(url, token, args.max_examples, args.seed)
        finally:
            _stop(process)
        unhandled = _unhandled(data_dir)
    for line in unhandled:
        print(f"fuzz-api: {line}")
    if unhandled and code == 0:
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
