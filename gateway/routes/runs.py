"""Runs and their event streams: /api/v1/runs/{id}[/events].

The event stream is SSE: `id:` is the event's seq, `event:` its type, `data:`
one line of JSON. `Last-Event-ID` (or `?last_event_id=` for page reloads)
resumes exactly after that seq. A client leaving cancels the upstream gRPC
stream; it never cancels the run.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from gateway import presenters
from gateway.bodies import field_error
from gateway.keys import CLIENTS, SETTINGS
from steward.errors import from_rpc_error
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


def _cursor(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not raw.isdecimal() or len(raw) > 18:
        raise field_error("Last-Event-ID", "must be a non-negative integer event seq")
    return int(raw)


@routes.get("/api/v1/runs/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    reply = await request.app[CLIENTS].runs.GetRun(store_pb.GetRunRequest(id=request.match_info["run_id"]))
    return web.json_response(presenters.run_json(reply.run))


@routes.post("/api/v1/runs/{run_id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    """Cancel a run in any state; a run that already ended is returned unchanged."""
    reply = await request.app[CLIENTS].runtime.CancelRun(runtime_pb.CancelRunRequest(id=request.match_info["run_id"]))
    return web.json_response(presenters.run_json(reply.run))


@routes.get("/api/v1/runs")
async def list_runs(request: web.Request) -> web.Response:
    raw = request.query.get("page_size", "0")
    if not raw.isdecimal() or len(raw) > 6:
        raise field_error("page_size", "must be a non-negative integer")
    reply = await request.app[CLIENTS].runs.ListRuns(
        store_pb.ListRunsRequest(
            conversation_id=request.query.get("conversation_id", ""),
            page_size=int(raw),
            page_token=request.query.get("page_token", ""),
        )
    )
    return web.json_response(
        {"runs": [presenters.run_json(r) for r in reply.runs], "next_page_token": reply.next_page_token or None}
    )


async def _pump(call: grpc.aio.UnaryStreamCall, sse: EventSourceResponse, retry_ms: int) -> None:  # type: ignore[type-arg]
    first = True
    try:
        async for item in call:
            kind, body = presenters.event_json(item.event)
            await sse.send(json.dumps(body), id=str(item.event.seq), event=kind, retry=retry_ms if first else None)
            first = False
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return
        error = from_rpc_error(exc)
        problem = {"status": exc.code().name, "reason": error.reason, "detail": error.message}
        await sse.send(json.dumps(problem), event="error")


@routes.get("/api/v1/runs/{run_id}/events")
async def run_events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    clients = request.app[CLIENTS]
    run_id = request.match_info["run_id"]
    after = _cursor(request)
    # Answer an unknown or foreign run with a plain 404 before the stream starts.
    await clients.runs.GetRun(store_pb.GetRunRequest(id=run_id))
    call = clients.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id, after_seq=after, follow=True))
    async with sse_response(request, ping_interval=settings.sse_ping_seconds) as sse:
        pump = asyncio.create_task(_pump(call, sse, settings.sse_retry_ms))
        gone = asyncio.create_task(sse.wait())  # ends when a ping finds the client gone
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            call.cancel()
            for task in (pump, gone):
                task.cancel()
            results = await asyncio.gather(pump, gone, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ConnectionResetError):
            log.warning("sse_stream_failed", error_type=type(result).__name__)
    return sse
