"""Run a fake upstream until SIGINT/SIGTERM.

`python -m fakes --host 127.0.0.1 --port 8090 [--chunk-delay 0.01] [--pieces 64]`
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from fakes.script import Reply
from fakes.upstream import FakeUpstream


async def serve(host: str, port: int, chunk_delay: float, pieces: int = 0) -> None:
    default = Reply(chunk_delay=chunk_delay)
    if pieces > 0:
        default = Reply(pieces=[f"tok{index} " for index in range(pieces)], chunk_delay=chunk_delay)
    fake = FakeUpstream(default=default)
    root = await fake.start(host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    print(f"fake upstream on {root}", flush=True)
    print(f"  anthropic base_url: {fake.anthropic_base_url}", flush=True)
    print(f"  openai base_url:    {fake.openai_base_url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fakes", description="Serve fake Anthropic and OpenAI APIs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--pieces", type=int, default=0, help="answer with this many text pieces 'tok<i> '")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.chunk_delay, args.pieces))


if __name__ == "__main__":
    main()
