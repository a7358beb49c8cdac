"""The transport floor: what one exchange between two processes costs on this machine, before any Steward code.

A server in its own process (`python -m bench.transport TCP_PORT GRPC_PORT`) and a client in this one, on loopback, one exchange
at a time with a pause between them (as a first token is: a call begun on a quiet, connected channel):

- TCP: 50 bytes echoed over asyncio streams.
- gRPC unary: a grpc.aio unary call and its answer (the shape of CreateRun and CheckpointRun).
- gRPC streamed call: a grpc.aio server-streaming call, from the call to its first message (the shape of Generate
  and StreamRunEvents); also split, on the shared monotonic clock, into call -> handler entered and handler entered ->
  first message received.

The servicer answers at once: no interceptor, no token, no database. These are the floors under the provider's
added TTFT (one streamed call more than the direct SDK call) and the gateway's (several gRPC exchanges in sequence
on the first-token path); ADR 0011.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.provider import _free_port
from bench.store import percentile

EXCHANGES = 300
WARM_UP = 30
PAUSE = 0.005  # seconds between exchanges
SERVING = health_pb2.HealthCheckResponse.SERVING
ENTERED = "x-entered-ns"


class _Instant(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Answers at once; a streamed call first sends the monotonic time (ns) its handler was entered at, as initial
    metadata (CLOCK_MONOTONIC is one clock for every process of the machine)."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        entered = time.monotonic_ns()
        await context.send_initial_metadata(((ENTERED, str(entered)),))
        yield health_pb2.HealthCheckResponse(status=SERVING)
        await asyncio.sleep(1)  # the client cancels the call once it has the first message


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)


async def serve(tcp_port: int, grpc_port: int) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Instant(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    echo = await asyncio.start_server(_echo, "127.0.0.1", tcp_port)
    print("ready", flush=True)
    async with echo:
        await echo.serve_forever()


async def _timed(exchange: Callable[[], Awaitable[None]]) -> list[float]:
    samples = []
    for index in range(WARM_UP + EXCHANGES):
        started = time.perf_counter()
        await exchange()
        if index >= WARM_UP:
            samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PAUSE)
    return samples


def _line(label: str, samples: list[float]) -> str:
    return f"[transport] {label}: p50 {percentile(samples, 50):.2f} ms, p95 {percentile(samples, 95):.2f} ms"


async def main() -> None:
    tcp_port, grpc_port = _free_port(), _free_port()
    args = ["-m", "bench.transport", str(tcp_port), str(grpc_port)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 30) != b"ready\n":
            raise RuntimeError("the transport server did not start")
        print(f"Transport floor (client here, server in its own process, loopback, {EXCHANGES} exchanges)")
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)

        async def tcp() -> None:
            writer.write(b"x" * 50)
            received = 0
            while received < 50:
                received += len(await reader.read(1024))

        print(_line("TCP round trip", await _timed(tcp)))
        writer.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def unary() -> None:
                await stub.Check(health_pb2.HealthCheckRequest())

            print(_line("gRPC unary call", await _timed(unary)))
            total, entered, answered = await _streamed(stub)
            print(_line("gRPC streamed call, to its first message", total))
            print(_line("  of which call -> handler entered", entered))
            print(_line("  and handler entered -> first message received", answered))
    finally:
        process.terminate()
        await process.wait()


async def _streamed(stub: health_pb2_grpc.HealthStub) -> tuple[list[float], list[float], list[float]]:
    """Per streamed call (ms): call -> first message received, call -> handler entered, handler entered -> first
    message received (the last two on the shared monotonic clock)."""
    total: list[float] = []
    entered: list[float] = []
    answered: list[float] = []
    for index in range(WARM_UP + EXCHANGES):
        started = time.monotonic_ns()
        call = stub.Watch(health_pb2.HealthCheckRequest())
        try:
            async for _ in call:
                received = time.monotonic_ns()
                break
            else:
                raise RuntimeError("the streamed call sent nothing")
            handler = int(dict(await call.initial_metadata())[ENTERED])
        finally:
            call.cancel()
        if index >= WARM_UP:
            total.append((received - started) / 1e6)
            entered.append((handler - started) / 1e6)
            answered.append((received - handler) / 1e6)
        await asyncio.sleep(PAUSE)
    return total, entered, answered


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
