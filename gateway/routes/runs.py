"""Runs and their event streams: /api/v1/runs[/{id}[/events|/cancel|/tool_results]].

The event stream is SSE: `id:` is the event's seq, `event:` its type, `data:`
one line of JSON. `Last-Event-ID` (or `?last_event_id=`, or its synonym
`?after_seq=`, for page reloads and `EventSource`, which cannot set the header
on its first request; the header wins) resumes exactly after that seq; a cursor older than the retained log is a 410
problem (CURSOR_EXPIRED) before the stream starts. A client leaving cancels the
upstream gRPC stream; it never cancels the run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from gateway import presenters
from gateway.app_keys import CLIENTS, SETTINGS
from gateway.bodies import field_error, idempotency_key, input_blocks, json_object, page, run_limits, run_mode
from gateway.draining import DRAINING
from steward.common.v1 import content_pb2
from steward.errors import StewardError
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

ENDED = {run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
ENDED |= {run_pb2.RUN_STATE_INCOMPLETE, run_pb2.RUN_STATE_EXPIRED}


def _cursor(request: web.Request) -> int:
    query = [request.query[key] for key in ("last_event_id", "after_seq") if key in request.query]
    if len(query) > 1:  # stays: a rule across two parameters
        raise field_error("after_seq", "give last_event_id or after_seq, not both")
    raw = request.headers.get("Last-Event-ID") or (query[0] if query else "") or "0"
    # Stays for the header: the validation middleware checks `last_event_id` but not headers.
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
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].runs.ListRuns(
        store_pb.ListRunsRequest(
            conversation_id=request.query.get("conversation_id", ""), page_size=page_size, page_token=page_token
        )
    )
    return web.json_response(
        {"runs": [presenters.run_json(r) for r in reply.runs], "next_page_token": reply.next_page_token or None}
    )


def _client_tools(tools: list[dict[str, Any]] | None) -> list[content_pb2.ToolSpec]:
    """`client_tools`: [{"name": ..., "description": ..., "input_schema": {...}}]; the runtime checks names
    and schemas, and qualifies the names as "client.<name>"."""
    return [
        content_pb2.ToolSpec(
            name=tool.get("name") or "",
            description=tool.get("description") or "",
            input_schema_json=json.dumps(tool["input_schema"]) if tool.get("input_schema") is not None else "",
        )
        for tool in tools or []
    ]


def _tool_results(results: list[dict[str, Any]]) -> list[content_pb2.ToolResultBlock]:
    """`results`: [{"tool_call_id": ..., "content": "...", "is_error": false}]."""
    return [
        content_pb2.ToolResultBlock(
            tool_call_id=result["tool_call_id"], content=result["content"], is_error=result.get("is_error", False)
        )
        for result in results
    ]


@routes.post("/api/v1/runs")
async def create_run(request: web.Request) -> web.Response:
    """Start a run in a conversation; 202 with the run and its events URL, 200 for a duplicate create
    (same `Idempotency-Key` or client-minted `run_id`), which returns the first run."""
    body = await json_object(request)
    reply = await request.app[CLIENTS].runtime.CreateRun(
        runtime_pb.CreateRunRequest(
            conversation_id=body["conversation_id"],
            input=input_blocks(body.get("content")),
            run_id=body.get("run_id") or "",
            agent_id=body.get("agent_id") or "",
            mode=run_mode(body.get("mode")),
            limits=run_limits(body.get("limits")),
            client_tools=_client_tools(body.get("client_tools")),
            request_id=idempotency_key(request) or body.get("request_id") or "",
        )
    )
    return web.json_response(
        {
            "run": presenters.run_json(reply.run),
            "existed": reply.existed,
            "events_url": f"/api/v1/runs/{reply.run.id}/events",
        },
        status=200 if reply.existed else 202,
    )


@routes.post("/api/v1/runs/{run_id}/tool_results")
async def submit_tool_results(request: web.Request) -> web.Response:
    """Answer the client tool calls a paused run waits for (their ids are in its `client_tool_requested`
    events); the run resumes. Repeating a result changes nothing; 409 RUN_STATE_CONFLICT for calls the run
    does not wait for."""
    body = await json_object(request)
    reply = await request.app[CLIENTS].runtime.SubmitToolResults(
        runtime_pb.SubmitToolResultsRequest(run_id=request.match_info["run_id"], results=_tool_results(body["results"]))
    )
    return web.json_response(presenters.run_json(reply.run))


Call = grpc.aio.UnaryStreamCall[store_pb.StreamRunEventsRequest, store_pb.StreamRunEventsResponse]


async def _pump(call: Call, sse: EventSourceResponse, retry_ms: int, first: object | None) -> None:
    """Send the stream's items (starting with `first`, when it was read already) as SSE events."""
    retry: int | None = retry_ms
    try:
        item = first if first is not None else await call.read()
        while isinstance(item, store_pb.StreamRunEventsResponse):  # until grpc.aio.EOF
            kind, body = presenters.event_json(item.event)
            await sse.send(json.dumps(body), id=str(item.event.seq), event=kind, retry=retry)
            retry = None
            item = await call.read()
    except StewardError as error:
        if error.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
            # CANCELLED: this side ended the call. UNAVAILABLE: the store went away (it drains, ADR 0015): the
            # stream ends cleanly and the client reconnects with Last-Event-ID after `retry`, losing nothing.
            return
        problem = {"status": error.code.name, "reason": error.reason, "detail": error.message}
        await sse.send(json.dumps(problem), event="error")


@routes.get("/api/v1/runs/{run_id}/events")
async def run_events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    clients = request.app[CLIENTS]
    run_id = request.match_info["run_id"]
    after = _cursor(request)
    # Answer an unknown or foreign run with a plain 404 before the stream starts.
    run = (await clients.runs.GetRun(store_pb.GetRunRequest(id=run_id))).run
    call = clients.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id, after_seq=after, follow=True))
    first: object | None = None
    if run.state in ENDED:
        # Only ended runs are compacted, and the store answers for them at once from its log: read the first
        # item here, so that an expired cursor (or any refusal) is a problem response, not an `error` event.
        # A live run's stream may wait long for its next event, so it starts at once.
        try:
            first = await call.read()  # an item, or EOF when the cursor is at the log's end
        except BaseException:
            call.cancel()
            raise
    async with sse_response(request, ping_interval=settings.sse_ping_seconds) as sse:
        pump = asyncio.create_task(_pump(call, sse, settings.sse_retry_ms, first))
        gone = asyncio.create_task(sse.wait())  # ends when a ping finds the client gone
        # The gateway drains (gateway.draining): the stream ends cleanly, the client reconnects elsewhere.
        drained = asyncio.create_task(request.app[DRAINING].streams.wait())
        try:
            await asyncio.wait({pump, gone, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            call.cancel()
            for task in (pump, gone, drained):
                task.cancel()
            results = await asyncio.gather(pump, gone, drained, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ConnectionResetError):
            log.warning("sse_stream_failed", error_type=type(result).__name__)
    return sse
