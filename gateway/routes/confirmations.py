"""Confirmations: list (pending by default), get, decide; /api/v1/confirmations[/{id}[/decision]]; and the audit
trail of one confirmation or one run (/api/v1/confirmations/{id}/audit, /api/v1/runs/{id}/audit).

A decision is the JSON object the confirmation's decision schema describes (by default
{"outcome": "approve" | "reject", "reason"?: str, "edited_arguments"?: object}); the confirm service
validates it, records the decider (the caller) and the surface ("api"), and refuses a second,
different decision. `expected_arguments_hash` (the hash the person was shown) guards against deciding
on arguments that changed. A decision the schema refuses answers 422 (DECISION_INVALID) and changes nothing.

The audit trail is the caller's only (the confirm service scopes it by the principal; another user's confirmation or
run answers 404), oldest first, keyset-paged: each event says what happened, who did it, and, for `created` and
`decided`, what the person was shown (preview, decision schema, arguments hash) and what was decided (the decision,
the arguments to execute and their hash); `execution_started` carries the hash of the arguments executed.
"""

from __future__ import annotations

import json

from aiohttp import web

from gateway import presenters
from gateway.app_keys import CLIENTS
from gateway.bodies import field_error, json_object, page
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

_STATES = {
    name.removeprefix("CONFIRMATION_STATE_").lower(): value
    for name, value in confirmation_pb2.ConfirmationState.items()
    if value != confirmation_pb2.CONFIRMATION_STATE_UNSPECIFIED
}
MAX_DECISION_BYTES = 256 * 1024


def _states(raw: str) -> list[confirmation_pb2.ConfirmationState.ValueType]:
    """`state`, whose pattern in the document allows only `all` or known names."""
    if not raw:
        return []
    if raw == "all":
        return list(_STATES.values())
    return [_STATES[name] for name in raw.split(",")]


@routes.get("/api/v1/confirmations")
async def list_confirmations(request: web.Request) -> web.Response:
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].confirm.ListConfirmations(
        confirm_pb.ListConfirmationsRequest(
            page_size=page_size,
            page_token=page_token,
            states=_states(request.query.get("state", "")),
            run_id=request.query.get("run_id", ""),
        )
    )
    return web.json_response(
        {
            "confirmations": [presenters.confirmation_json(c) for c in reply.confirmations],
            "next_page_token": reply.next_page_token or None,
        }
    )


@routes.get("/api/v1/confirmations/{confirmation_id}")
async def get_confirmation(request: web.Request) -> web.Response:
    reply = await request.app[CLIENTS].confirm.GetConfirmation(
        confirm_pb.GetConfirmationRequest(id=request.match_info["confirmation_id"])
    )
    return web.json_response(presenters.confirmation_json(reply.confirmation))


async def _audit_page(request: web.Request, *, run_id: str = "", confirmation_id: str = "") -> web.Response:
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].confirm.ListAuditEvents(
        confirm_pb.ListAuditEventsRequest(
            page_size=page_size, page_token=page_token, run_id=run_id, confirmation_id=confirmation_id
        )
    )
    return web.json_response(
        {
            "audit_events": [presenters.audit_event_json(event) for event in reply.audit_events],
            "next_page_token": reply.next_page_token or None,
        }
    )


@routes.get("/api/v1/confirmations/{confirmation_id}/audit")
async def confirmation_audit(request: web.Request) -> web.Response:
    confirmation_id = request.match_info["confirmation_id"]
    # 404 for an unknown or another user's confirmation, rather than an empty trail.
    await request.app[CLIENTS].confirm.GetConfirmation(confirm_pb.GetConfirmationRequest(id=confirmation_id))
    return await _audit_page(request, confirmation_id=confirmation_id)


@routes.get("/api/v1/runs/{run_id}/audit")
async def run_audit(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    await request.app[CLIENTS].runs.GetRun(store_pb.GetRunRequest(id=run_id))  # 404 for another user's run
    return await _audit_page(request, run_id=run_id)


@routes.post("/api/v1/confirmations/{confirmation_id}/decision")
async def decide(request: web.Request) -> web.Response:
    body = await json_object(request)
    decision_json = json.dumps(body["decision"], ensure_ascii=False)
    if len(decision_json.encode()) > MAX_DECISION_BYTES:  # stays: a size in bytes of the encoded decision
        raise field_error("decision", f"must be at most {MAX_DECISION_BYTES} bytes")
    reply = await request.app[CLIENTS].confirm.DecideConfirmation(
        confirm_pb.DecideConfirmationRequest(
            confirmation_id=request.match_info["confirmation_id"],
            decision_json=decision_json,
            expected_arguments_hash=body.get("expected_arguments_hash") or "",
            surface=confirmation_pb2.SURFACE_API,
        )
    )
    return web.json_response(presenters.confirmation_json(reply.confirmation))
