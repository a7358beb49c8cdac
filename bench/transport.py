"""The transport floor: what one exchange between two processes costs on this machine, before any Steward code.

A server in its own process (`python -m bench.transport`, on ports it picks and reports) and a client in this one,
on loopback, one exchange at a time with a pause between them (as a first token is: a call begun on a quiet,
connected channel):

- TCP: 50 bytes echoed over asyncio streams.
- gRPC unary: a grpc.aio unary call and its answer (the shape of CreateRun and CheckpointRun).
- gRPC streamed call: a grpc.aio server-streaming call, from the call to its first message (the shape of Generate
  and StreamRunEvents); also split, on the shared monotonic clock, into call -> handler entered and handler entered ->
  first message received.

- gRPC streamed calls in a burst: BURST calls begun at once (as the provider bench's concurrent rounds begin
  them), each from its call to its first message; what the burst adds over one call alone is queueing in the
  hop itself, which a direct upstream call does not have.

Then the CPU one unary call costs, client and server, over calls made back to back. The servicer answers at once:
no interceptor, no token, no database. These are the floors under the provider's
added TTFT (one streamed call more than the direct SDK call) and the gateway's (several gRPC exchanges in sequence
on the first-token path); ADR 0011.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.store import percentile

EXCHANGES = 300
WARM_UP = 30
PAUSE = 0.005  # seconds between exchanges
CPU_CALLS = 2000
BURST = 32
BURST_ROUNDS = 30
SERVING = health_pb2.HealthCheckResponse.SERVING


class _Instant(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Answers at once. A streamed call reports the monotonic time (ns) its handler was entered at on the server's
    stdout before its first message (CLOCK_MONOTONIC is one clock for every process of the machine)."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        print(f"entered {time.monotonic_ns()}", flush=True)  # one small pipe write, a few microseconds
        yield health_pb2.HealthCheckResponse(status=SERVING)
        await asyncio.sleep(1)  # the client cancels the call once it has the first message


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)


async def serve() -> None:
    """Serve on free ports; print "ready <tcp port> <grpc port>"."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Instant(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    tcp_port = echo.sockets[0].getsockname()[1]
    print(f"ready {tcp_port} {grpc_port}", flush=True)
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


def _process_cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (/proc; clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _cpu_per_call(call: Callable[[], Awaitable[None]], server_pid: int) -> tuple[float, float]:
    """CPU milliseconds per call, in this process and in the server's, over CPU_CALLS calls made back to back."""
    client, server = time.process_time(), _process_cpu_seconds(server_pid)
    for _ in range(CPU_CALLS):
        await call()
    client, server = time.process_time() - client, _process_cpu_seconds(server_pid) - server
    return client * 1000 / CPU_CALLS, server * 1000 / CPU_CALLS


def _line(label: str, samples: list[float]) -> str:
    return f"[transport] {label}: p50 {percentile(samples, 50):.2f} ms, p95 {percentile(samples, 95):.2f} ms"


async def main() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.transport", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        server_out = process.stdout
        ready = (await asyncio.wait_for(server_out.readline(), 30)).decode().split()
        if len(ready) != 3 or ready[0] != "ready":
            raise RuntimeError(f"the transport server did not start: {ready}")
        tcp_port, grpc_port = int(ready[1]), int(ready[2])
        print(f"Transport floor (client here, server in its own process, loopback, {EXCHANGES} exchanges)")
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)

        async def tcp() -> None:
            writer.write(b"x" * 50)
            received = 0
            while received < 50:
                data = await reader.read(1024)
                if not data:
                    raise RuntimeError("the echo server closed the connection")
                received += len(data)

        print(_line("TCP round trip", await _timed(tcp)))
        writer.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def unary() -> None:
                await stub.Check(health_pb2.HealthCheckRequest())

            print(_line("gRPC unary call", await _timed(unary)))
            total, entered, answered = await _streamed(stub, server_out)
            print(_line("gRPC streamed call, to its first message", total))
            print(_line("  of which call -> handler entered", entered))
            print(_line("  and handler entered -> first message received", answered))
            burst = await _burst(stub, server_out)
            print(
                _line(f"gRPC streamed calls, {BURST} begun at once, each to its first message", burst)
                + f" (p50 {percentile(burst, 50) - percentile(total, 50):.2f} ms over one call alone)"
            )
            client, server = await _cpu_per_call(unary, process.pid)
            print(
                f"[transport] CPU per gRPC unary call, {CPU_CALLS} back to back: client {client:.2f} ms, "
                f"server {server:.2f} ms, {client + server:.2f} ms in all"
            )
    finally:
        process.terminate()
        await process.wait()


async def _streamed(
    stub: health_pb2_grpc.HealthStub, server_out: asyncio.StreamReader
) -> tuple[list[float], list[float], list[float]]:
    """Per streamed call (ms): call -> first message received, call -> handler entered, handler entered -> first
    message received (the last two on the shared monotonic clock; the entry time is read from the server's stdout
    after the call)."""
    total: list[float] = []
    entered: list[float] = []
    answered: list[float] = []
    for index in range(WARM_UP + EXCHANGES):
        started = time.monotonic_ns()
        call = stub.Watch(health_pb2.HealthCheckRequest())
        try:
            received = 0
            async for _ in call:
                received = time.monotonic_ns()
                break
            if not received:
                raise RuntimeError("the streamed call sent nothing")
        finally:
            call.cancel()
        report = (await asyncio.wait_for(server_out.readline(), 10)).decode().split()
        if len(report) != 2 or report[0] != "entered":
            raise RuntimeError(f"unexpected report from the transport server: {report}")
        handler = int(report[1])
        if index >= WARM_UP:
            total.append((received - started) / 1e6)
            entered.append((handler - started) / 1e6)
            answered.append((received - handler) / 1e6)
        await asyncio.sleep(PAUSE)
    return total, entered, answered


async def _burst(stub: health_pb2_grpc.HealthStub, server_out: asyncio.StreamReader) -> list[float]:
    """Per call of BURST_ROUNDS bursts of BURST streamed calls begun at once (ms): call -> first message received."""

    async def first_message() -> float:
        started = time.perf_counter()
        call = stub.Watch(health_pb2.HealthCheckRequest())
        try:
            async for _ in call:
                return (time.perf_counter() - started) * 1000
            raise RuntimeError("the streamed call sent nothing")
        finally:
            call.cancel()

    samples: list[float] = []
    for index in range(1 + BURST_ROUNDS):  # the first round warms the channel up
        times = await asyncio.gather(*(first_message() for _ in range(BURST)))
        for _ in range(BURST):  # the handlers' entry reports, not used here
            await asyncio.wait_for(server_out.readline(), 10)
        if index:
            samples += times
        await asyncio.sleep(PAUSE * 10)
    return samples


if __name__ == "__main__":
    asyncio.run(serve())
