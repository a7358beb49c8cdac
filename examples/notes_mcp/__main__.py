"""Run the notes MCP server.

    python -m examples.notes_mcp --transport stdio --data notes.db
    python -m examples.notes_mcp --transport http --host 127.0.0.1 --port 8765 --data notes.db

`--data` defaults to `$NOTES_MCP_DATA`, `--write-delay` to `$NOTES_MCP_WRITE_DELAY` (0). Over stdio,
stdout is the protocol: logs go to stderr only. Over HTTP the server listens on `--port` (0 picks a
free one) and prints its endpoint URL, `http://HOST:PORT/mcp`, as one line on stdout once it
accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import anyio
import uvicorn
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings

from examples.notes_mcp.server import MAX_DELAY_SECONDS, build_server
from examples.notes_mcp.store import NotesStore

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.notes_mcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP only: the address to listen on")
    parser.add_argument("--port", type=int, default=0, help="HTTP only: the port; 0 picks a free one")
    parser.add_argument("--data", type=Path, default=os.environ.get("NOTES_MCP_DATA"), help="the SQLite data file")
    parser.add_argument(
        "--write-delay",
        type=float,
        default=float(os.environ.get("NOTES_MCP_WRITE_DELAY", "0")),
        help="seconds every write waits before it applies, unless the call gives delay_seconds",
    )
    return parser


async def _serve_stdio(store: NotesStore, write_delay: float) -> None:
    server = build_server(store, write_delay=write_delay)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


async def _serve_http(store: NotesStore, write_delay: float, host: str, port: int) -> None:
    server = build_server(store, write_delay=write_delay)
    security = None
    if host not in LOOPBACK:  # keep DNS-rebinding protection on: name the host we serve
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{host}:*", "127.0.0.1:*", "localhost:*"],
            allowed_origins=[f"http://{host}:*", "http://127.0.0.1:*", "http://localhost:*"],
        )
    app = server.streamable_http_app(host=host, transport_security=security)
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{bound_port}/mcp", flush=True)  # HTTP mode: stdout is free
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.data is None:
        _parser().error("--data (or NOTES_MCP_DATA) is required")
    if not 0 <= args.write_delay <= MAX_DELAY_SECONDS:
        _parser().error(f"--write-delay must be between 0 and {MAX_DELAY_SECONDS:g}")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="notes_mcp %(levelname)s %(message)s")
    store = NotesStore(Path(args.data))
    try:
        if args.transport == "stdio":
            anyio.run(_serve_stdio, store, args.write_delay)
        else:
            anyio.run(_serve_http, store, args.write_delay, args.host, args.port)
    finally:
        store.close()


if __name__ == "__main__":
    main()
