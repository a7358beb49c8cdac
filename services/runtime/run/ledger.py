"""Executing an approved write exactly once, through the confirm service's execution ledger.

BeginExecution records the write STARTED (keyed by the confirmation id) before the tool is called,
FinishExecution records its result after. Found STARTED after a crash, an idempotent tool is called
again with the recorded key (the tool applies it at most once); a non-idempotent one is marked
OUTCOME_UNKNOWN and the user is asked, with a new confirmation, whether to try again. It is never
silently run twice.

Every tool call (reads too) goes through `call_tool`, which waits out its server's outage (ADR 0016).
"""

from __future__ import annotations

import asyncio
import json

import structlog

from services.runtime.run import hooked, outage
from services.runtime.run.context import RunContext
from services.runtime.tools.toolbox import Kind, ToolInfo, ToolOutcome
from steward.canonical import arguments_hash
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2, execution_pb2

log = structlog.get_logger(__name__)


async def call_tool(ctx: RunContext, tool: ToolInfo, arguments: dict[str, object], key: str) -> ToolOutcome:
    """A tool call under the tool timeout (the tool layer reports a timeout as an outcome). A try its server's outage
    cut off (outage.classify_tool: not sent; or the connection lost, on a read or a write whose server honours the
    key) is made again with the same key after a backoff, within the same tool timeout: no wait outlasts it, and
    cancel and the wall-clock limit end the waits like any other. Past the timeout (or `outage.OUTAGE_BOUND`) the last
    outcome stands, as it would without the retry; one that says "not sent" after a try that may have run is
    reported as that try (outcome unknown), so the ledger never takes a maybe-run write for one that did not run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.limits.tool_timeout
    safe = tool.kind == Kind.READ or tool.idempotent
    away = outage.Outage()
    maybe_ran: ToolOutcome | None = None
    time_limit = ctx.limits.tool_timeout  # the first try gets the whole limit (and its messages say so)
    while True:
        outcome = await ctx.services.toolbox.call(tool, arguments, key=key, time_limit=time_limit)
        if outcome.outcome_unknown:
            maybe_ran = outcome
        status = outcome.status
        if status is None or outage.classify_tool(status, safe_to_repeat=safe) is not outage.Fault.OUTAGE:
            return outcome
        wait = away.next_wait()
        if wait is None or wait >= deadline - loop.time():
            log.warning("tool_server_away", tool=tool.name, status=status.value, seconds=ctx.limits.tool_timeout)
            return maybe_ran if maybe_ran is not None and status.not_run else outcome
        log.info("tool_call_retrying", tool=tool.name, status=status.value, wait=round(wait, 2))
        await asyncio.sleep(wait)
        time_limit = deadline - loop.time()


def _outcome(execution: execution_pb2.Execution) -> ToolOutcome:
    try:
        content = json.loads(execution.result_json).get("content", "")
    except (ValueError, AttributeError):
        content = execution.result_json
    return ToolOutcome(str(content), is_error=execution.is_error)


async def _call_and_finish(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    confirmation_id: str,
    arguments: dict[str, object],
    key: str,
) -> ToolOutcome | None:
    """The tool's outcome, recorded in the ledger; None when the outcome is unknown (recorded so)."""
    started = hooked.tool_call(call, tool, confirmation_id=confirmation_id)
    await ctx.services.hooks.on_tool_call_start(hooked.step_info(ctx), started)
    outcome = await call_tool(ctx, tool, arguments, key)
    if outcome.outcome_unknown:  # sent, but no answer: it may have happened
        await ctx.services.confirm.FinishExecution(
            confirm_pb.FinishExecutionRequest(
                confirmation_id=confirmation_id, outcome_unknown=True, lease_epoch=ctx.epoch
            )
        )
        return None
    await ctx.services.confirm.FinishExecution(
        confirm_pb.FinishExecutionRequest(
            confirmation_id=confirmation_id,
            result_json=json.dumps({"content": outcome.content}, ensure_ascii=False),
            is_error=outcome.is_error,
            lease_epoch=ctx.epoch,
        )
    )
    return outcome


async def execute(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    confirmation: confirmation_pb2.Confirmation,
    arguments: dict[str, object],
    hashed: str,
) -> ToolOutcome | None:
    """The write's outcome; None when a crash left a non-idempotent write's outcome unknown."""
    begun = await ctx.services.confirm.BeginExecution(
        confirm_pb.BeginExecutionRequest(
            confirmation_id=confirmation.id, idempotent=tool.idempotent, arguments_hash=hashed, lease_epoch=ctx.epoch
        )
    )
    execution = begun.execution
    if begun.created:
        return await _call_and_finish(ctx, call, tool, confirmation.id, arguments, execution.idempotency_key)
    if execution.state == execution_pb2.EXECUTION_STATE_FINISHED:
        return _outcome(execution)
    if execution.state == execution_pb2.EXECUTION_STATE_STARTED and execution.idempotent:
        return await _call_and_finish(ctx, call, tool, confirmation.id, arguments, execution.idempotency_key)
    if execution.state == execution_pb2.EXECUTION_STATE_STARTED:
        await ctx.services.confirm.FinishExecution(
            confirm_pb.FinishExecutionRequest(
                confirmation_id=confirmation.id, outcome_unknown=True, lease_epoch=ctx.epoch
            )
        )
    return None


async def outcome_unknown_confirmation(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    approved: confirmation_pb2.Confirmation,
) -> confirmation_pb2.Confirmation:
    """The confirmation asking whether to try a write again whose outcome is unknown (made once)."""
    preview = confirmation_pb2.Preview(
        kind=confirmation_pb2.PREVIEW_KIND_TEXT,
        title=f"Did {tool.name} happen?",
        content=(
            f"Steward was interrupted while {tool.name} was running, and cannot tell whether the change was made. "
            "Approve to try it again (it may then happen twice), or reject to leave it."
        ),
    )
    reply = await ctx.services.confirm.CreateConfirmation(
        confirm_pb.CreateConfirmationRequest(
            request_id=f"{ctx.run_id}/{call.id}/unknown/{approved.id}",
            run_id=ctx.run_id,
            conversation_id=ctx.run.conversation_id,
            tool_call_id=call.id,
            tool_name=tool.name,
            arguments_json=approved.decision.edited_arguments_json or approved.arguments_json,
            preview=preview,
            kind=confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN,
            related_confirmation_id=approved.id,
            lease_epoch=ctx.epoch,
        )
    )
    return reply.confirmation


async def resolve_unknown(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    unknown: confirmation_pb2.Confirmation,
    arguments: dict[str, object],
) -> ToolOutcome:
    """The outcome once the user answered the outcome-unknown confirmation."""
    if unknown.state != confirmation_pb2.CONFIRMATION_STATE_APPROVED:
        return ToolOutcome(
            f"{tool.name} was interrupted and its outcome is unknown; the user chose not to try it again.",
            is_error=True,
        )
    retried = await execute(ctx, call, tool, unknown, arguments, arguments_hash(json.dumps(arguments)))
    if retried is None:
        return ToolOutcome(f"{tool.name} was interrupted twice; its outcome is unknown.", is_error=True)
    return retried
