"""A run's confirmations: the one each write asks for, its announcements in the run's log, and what becomes of
them (acknowledged once consumed, cancelled when the run ends).

A write's confirmation is idempotent by "<run id>/<tool call id>/write" (or ".../policy" when the agent's policy
approves it), so a resumed run finds the one it made before. Its announcements are appended once per key across
claims (`append_once`), so a resumed run does not announce twice.

What the person is shown (ADR 0017): the tool's proposal when it makes one (Toolbox.propose: its code, a companion
tool, a template), else its arguments as JSON; and the tool's decision schema, else the default. A proposal is made
once: a resumed run looks its confirmation up by request id first (a proposal made again could differ, and the
request would then conflict). A proposal that cannot be made (the companion fails, times out, answers nonsense)
never blocks the question: the JSON preview is shown, its title saying why. A policy-approved write is shown to
nobody, so no proposal is made for it.
"""

from __future__ import annotations

import json
from datetime import timedelta

import structlog

from services.runtime.run.context import RunContext, Services
from services.runtime.tools.model import PreviewKind
from services.runtime.tools.toolbox import ToolInfo, ToolOutcome
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.errors import Reason, StewardError
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)

MAX_ARGUMENTS_SCHEMA = 64 * 1024  # CreateConfirmationRequest.arguments_schema_json's limit, in characters
MAX_TITLE = 500  # Preview.title's limit, in characters
PREVIEW_KINDS = {
    PreviewKind.TEXT: confirmation_pb2.PREVIEW_KIND_TEXT,
    PreviewKind.JSON: confirmation_pb2.PREVIEW_KIND_JSON,
    PreviewKind.DIFF: confirmation_pb2.PREVIEW_KIND_DIFF,
}
DECIDED = (
    confirmation_pb2.CONFIRMATION_STATE_APPROVED,
    confirmation_pb2.CONFIRMATION_STATE_REJECTED,
    confirmation_pb2.CONFIRMATION_STATE_EXPIRED,
)


async def confirmation_for(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    arguments: dict[str, object],
    *,
    by_policy: bool = False,
) -> confirmation_pb2.Confirmation:
    """The confirmation for a write call: created the first time, found again after that; `by_policy` when the
    agent's policy approves it (created approved, so the write still goes through the ledger)."""
    request_id = f"{ctx.run_id}/{call.id}/{'policy' if by_policy else 'write'}"
    preview = json_preview(tool.name, arguments)
    schema, decision_arguments = ("", ()) if by_policy else (tool.decision_schema_json, tool.decision_arguments)
    if tool.proposes and not by_policy:
        made_before = await _made_before(ctx, request_id)
        if made_before is not None:
            return made_before
        proposal = await ctx.services.toolbox.propose(tool, arguments, time_limit=ctx.limits.tool_timeout)
        if isinstance(proposal, str):
            log.warning("proposal_not_made", tool=tool.name, problem=proposal)
            preview.title = f"{tool.name} wants to make a change (no proposal: {proposal})"[:MAX_TITLE]
        elif proposal is not None:
            preview = confirmation_pb2.Preview(
                kind=PREVIEW_KINDS[proposal.kind], content=proposal.content, title=proposal.title or preview.title
            )
            if proposal.decision_schema is not None:
                schema = json.dumps(proposal.decision_schema, ensure_ascii=False)
    arguments_schema = tool.input_schema_json if len(tool.input_schema_json) <= MAX_ARGUMENTS_SCHEMA else ""
    request = _create_request(ctx, call, tool, arguments, request_id, preview, by_policy=by_policy)
    request.arguments_schema_json = arguments_schema
    request.decision_schema_json = schema
    if schema and arguments_schema:  # only the names this call's schema declares
        declared = json.loads(schema).get("properties") or {}
        request.decision_arguments.extend(name for name in decision_arguments if name in declared)
    try:
        reply = await ctx.services.confirm.CreateConfirmation(request)
    except StewardError as error:
        custom = schema or preview.kind != confirmation_pb2.PREVIEW_KIND_JSON
        if error.reason not in (Reason.INVALID_ARGUMENT, Reason.TOO_LARGE) or not custom:
            raise
        # What the tool declared was refused (the runtime checks it first, so this is a mismatch of rules): ask with
        # the JSON preview and the default decision schema rather than fail the run.
        log.warning("proposal_refused", tool=tool.name, detail=error.message)
        request = _create_request(ctx, call, tool, arguments, request_id, json_preview(tool.name, arguments))
        request.arguments_schema_json = arguments_schema
        request.preview.title = f"{tool.name} wants to make a change (its proposal was refused: {error.message})"[
            :MAX_TITLE
        ]
        reply = await ctx.services.confirm.CreateConfirmation(request)
    return reply.confirmation


def json_preview(tool_name: str, arguments: dict[str, object]) -> confirmation_pb2.Preview:
    """The default preview: the arguments, as formatted JSON."""
    return confirmation_pb2.Preview(
        kind=confirmation_pb2.PREVIEW_KIND_JSON,
        title=f"{tool_name} wants to make a change",
        content=json.dumps(arguments, indent=2, ensure_ascii=False),
    )


async def _made_before(ctx: RunContext, request_id: str) -> confirmation_pb2.Confirmation | None:
    try:
        reply = await ctx.services.confirm.GetConfirmation(confirm_pb.GetConfirmationRequest(request_id=request_id))
    except StewardError as error:
        if error.reason == Reason.CONFIRMATION_NOT_FOUND:
            return None
        raise
    return reply.confirmation


def _create_request(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    arguments: dict[str, object],
    request_id: str,
    preview: confirmation_pb2.Preview,
    *,
    by_policy: bool = False,
) -> confirm_pb.CreateConfirmationRequest:
    request = confirm_pb.CreateConfirmationRequest(
        request_id=request_id,
        approved_by_policy=by_policy,
        run_id=ctx.run_id,
        conversation_id=ctx.run.conversation_id,
        tool_call_id=call.id,
        tool_name=tool.name,
        arguments_json=json.dumps(arguments, ensure_ascii=False),
        preview=preview,
        kind=confirmation_pb2.CONFIRMATION_KIND_TOOL_WRITE,
        lease_epoch=ctx.epoch,
    )
    # arguments_schema_json (set by the caller): edited arguments are checked against it when decided; a schema over
    # the contract's limit is not sent (the edit is still checked here before the write runs, parse_arguments).
    if ctx.services.settings.confirmation_ttl > 0:
        request.ttl.FromTimedelta(timedelta(seconds=ctx.services.settings.confirmation_ttl))
    return request


async def announce_request(ctx: RunContext, confirmation: confirmation_pb2.Confirmation) -> None:
    """The confirmation_requested event, written once per confirmation."""
    requested = ev.ConfirmationRequested(
        confirmation_id=confirmation.id,
        tool_call_id=confirmation.tool_call_id,
        tool_name=confirmation.tool_name,
        arguments_json=confirmation.arguments_json,
        preview=confirmation.preview.content,
        decision_schema_json=confirmation.decision_schema_json,
        expire_time=confirmation.expire_time,
        preview_kind=confirmation_pb2.PreviewKind.Name(confirmation.preview.kind).removeprefix("PREVIEW_KIND_").lower(),
        preview_title=confirmation.preview.title,
        decision_arguments=confirmation.decision_arguments,
    )
    await append_once(ctx, ev.RunEvent(step=ctx.step_count, confirmation_requested=requested), confirmation.id)


async def announce_decision(ctx: RunContext, confirmation: confirmation_pb2.Confirmation) -> None:
    decision = confirmation.decision
    outcome = confirmation_pb2.ConfirmationState.Name(confirmation.state).removeprefix("CONFIRMATION_STATE_").lower()
    decided = ev.ConfirmationDecided(
        confirmation_id=confirmation.id,
        outcome=outcome,
        decided_by=decision.decided_by,
        surface=confirmation_pb2.Surface.Name(decision.surface).removeprefix("SURFACE_").lower(),
    )
    await append_once(ctx, ev.RunEvent(step=ctx.step_count, confirmation_decided=decided), f"{confirmation.id}/decided")


async def append_once(ctx: RunContext, event: ev.RunEvent, key: str) -> None:
    """Append one event, once per key (not through the writer's queue: its key must be the same in every claim, so
    a resumed run does not announce twice); the writer is settled first, so the log keeps its order."""
    await ctx.writer.settle()
    reply = await ctx.services.runs.AppendRunEvents(
        store_pb.AppendRunEventsRequest(
            run_id=ctx.run_id, lease_epoch=ctx.epoch, events=[event], request_id=f"{ctx.run_id}/event/{key}"
        )
    )
    event.seq = reply.first_seq
    if not reply.replayed:  # appended by an earlier claim: its tap saw it then
        await ctx.services.hooks.on_event(ctx.run_id, event)


def rejection(confirmation: confirmation_pb2.Confirmation) -> ToolOutcome:
    if confirmation.state == confirmation_pb2.CONFIRMATION_STATE_EXPIRED:
        return ToolOutcome("Nobody confirmed this change in time, so it was not made.", is_error=True)
    reason = confirmation.decision.reason
    said = f" They said: {reason}" if reason else ""
    return ToolOutcome(f"The user rejected this change; it was not made.{said}", is_error=True)


async def cancel_confirmations(services: Services, run_id: str, reason: str = "") -> None:
    """Cancel the pending confirmations of a run that ended (best effort: a failure is logged)."""
    try:
        await services.confirm.CancelConfirmations(confirm_pb.CancelConfirmationsRequest(run_id=run_id, reason=reason))
    except StewardError as error:
        log.warning("confirmations_not_cancelled", reason=error.reason)


async def acknowledge(ctx: RunContext, confirmation_ids: list[str]) -> None:
    """Acknowledge consumed decisions once their results are durable (a crash before that sweeps them again)."""
    if confirmation_ids:
        await ctx.writer.settle()
    for confirmation_id in confirmation_ids:
        await ctx.services.confirm.AcknowledgeDecision(
            confirm_pb.AcknowledgeDecisionRequest(confirmation_id=confirmation_id, lease_epoch=ctx.epoch)
        )
