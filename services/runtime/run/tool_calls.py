"""Resolving a step's tool calls: read tools at once, writes through confirmations and the ledger.

For every call still owed a result (history.pending_calls), in order (reads first, then the rest in order):
- an unknown tool, arguments that are not a JSON object or do not fit the tool's schema: an error
  result the model can act on;
- a call a hook denies (hooked.py: asked before anything else is done for the call): an error result saying it was
  denied by policy, and nothing else;
- a client tool (the caller's own): a `client_tool_requested` event, and the call waits for
  SubmitToolResults;
- a read tool: called at once (all read calls of the step in parallel), each with the tool timeout; a read
  that passes it gets a TOOL_TIMEOUT error result and ends the run incomplete (timeout; steps.py: a limit, like
  the first-token timeout): the step's writes and client tools, which wait for its reads, are then not run
  (NOT_RUN), and these results are written with the run's end;
- a write tool the agent's policy lets through (autonomous mode, as the tool layer classifies it): a
  confirmation created approved by the policy ("<run id>/<tool call id>/policy"), executed through the
  execution ledger like any approved write;
- any other write: a confirmation (idempotent by "<run id>/<tool call id>/write", so a resumed run
  finds the one it made before). Pending: the call waits and the run will pause. Rejected or
  expired: an error result saying so. Approved: executed through the execution ledger
  (ledger.execute), with the decider's edited arguments if any.

Each result is checkpointed as its own tool message with its event as soon as it is known. The results
of reads (and the error results no tool call produced) are written behind the loop (writer.py): a crash
before they land costs the read again. Every other result is durable before the loop goes on, and the
writer is settled before any write, confirmation or client tool request, so the step that asked for it
is durable first; a replica resuming after a crash never repeats a finished write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field

from services.runtime.run import hooked, ledger
from services.runtime.run.confirmations import (
    DECIDED,
    announce_decision,
    announce_request,
    append_once,
    confirmation_for,
    rejection,
)
from services.runtime.run.context import RunContext
from services.runtime.run.history import result_message
from services.runtime.run.ledger import call_tool
from services.runtime.tools import client
from services.runtime.tools.toolbox import Kind, ToolInfo, ToolOutcome
from steward import canonical
from steward.canonical import arguments_hash
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirmation_pb2
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import store_service_pb2 as store_pb


@dataclass
class Resolution:
    waiting: list[str] = field(default_factory=list)  # ids of confirmations a person has yet to decide
    waiting_client: list[str] = field(default_factory=list)  # ids of tool calls the caller has yet to answer
    acknowledge: list[str] = field(default_factory=list)  # decided confirmations consumed by this resolution
    # A read passed the tool timeout: a limit, so the run ends (incomplete, timeout). These results are not written
    # here but with the run's end, in one checkpoint (steps.py), so that a crash between the two cannot leave a run
    # that goes on as if the limit had not been reached: the timed-out reads' own, and a "not run" one for each write
    # or client tool call of the step, which are then never proposed.
    ending: list[tuple[content_pb2.ToolCallBlock, ToolOutcome, str]] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return bool(self.ending)


def parse_arguments(tool: ToolInfo, arguments_json: str, ctx: RunContext) -> dict[str, object] | str:
    """The arguments as an object, or why they cannot be used."""
    try:
        arguments = canonical.parse(arguments_json or "{}")
    except ValueError as exc:
        return f"the arguments of {tool.name} are not valid JSON: {exc}"
    if not isinstance(arguments, dict):
        return f"the arguments of {tool.name} must be a JSON object"
    problem = (
        client.validate(tool, arguments) if tool.kind == Kind.CLIENT else ctx.services.toolbox.validate(tool, arguments)
    )
    return problem or arguments  # the validators' sentences already name the tool


async def record_result(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    outcome: ToolOutcome,
    *,
    reason: str = "",
    wait: bool = True,
    tool: ToolInfo | None = None,
    confirmation_id: str = "",
) -> None:
    """Checkpoint one tool result (message + event), once; `wait=False` leaves it behind the loop (writer.py), for
    results whose loss in a crash costs only the call done again (reads, and results no tool call produced). A
    result over the deployment's limit is cut to it, with a note the model can read."""
    message, event = result_parts(ctx, call, outcome, reason)
    written = ctx.checkpoint_soon(
        store_pb.CheckpointRunRequest(
            run_id=ctx.run_id,
            lease_epoch=ctx.epoch,
            messages=[message],
            events=[event],
            request_id=f"{ctx.run_id}/{call.id}/result",
        )
    )
    if wait:
        await written
    hook_call = hooked.tool_call(call, tool, confirmation_id=confirmation_id)
    await ctx.services.hooks.after_tool_call(hooked.step_info(ctx), hook_call, hooked.tool_result(outcome, reason))


async def _denied(ctx: RunContext, call: content_pb2.ToolCallBlock, tool: ToolInfo, *, wait: bool = True) -> bool:
    """Whether a hook denied the call (its result then recorded: the model reads why, nothing else is done)."""
    denial = await hooked.denied(ctx, call, tool)
    if denial is None:
        return False
    outcome = hooked.denial_outcome(call, denial)
    await record_result(ctx, call, outcome, reason=denial.code, wait=wait, tool=tool)
    return True


def result_parts(
    ctx: RunContext, call: content_pb2.ToolCallBlock, outcome: ToolOutcome, reason: str = ""
) -> tuple[content_pb2.ChatMessage, ev.RunEvent]:
    """A tool result as the conversation and the run's log keep it: its tool message and its event (the outcome cut
    to the deployment's limit first)."""
    outcome = capped(outcome, ctx.services.settings.max_tool_result_chars)
    if outcome.is_error:
        event = ev.RunEvent(
            step=ctx.step_count,
            tool_call_failed=ev.ToolCallFailed(
                tool_call_id=call.id, reason=reason or "TOOL_ERROR", message=outcome.content[:2000]
            ),
        )
    else:
        finished = ev.ToolCallFinished(tool_call_id=call.id, result=outcome.content)
        event = ev.RunEvent(step=ctx.step_count, tool_call_finished=finished)
    return result_message(call.id, outcome.content, is_error=outcome.is_error), event


def capped(outcome: ToolOutcome, limit: int) -> ToolOutcome:
    """The outcome with its content cut to `limit` characters, saying so, when it is longer."""
    if len(outcome.content) <= limit:
        return outcome
    note = f"\n[truncated: the tool returned {len(outcome.content)} characters; the first {limit} are shown]"
    return dataclasses.replace(outcome, content=outcome.content[:limit] + note)


async def _read(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    arguments: dict[str, object],
    resolution: Resolution,
) -> None:
    if await _denied(ctx, call, tool, wait=False):
        return
    await ctx.services.hooks.on_tool_call_start(hooked.step_info(ctx), hooked.tool_call(call, tool))
    outcome = await call_tool(ctx, tool, arguments, f"{ctx.run_id}:{call.id}")
    if outcome.timed_out:  # written with the run's end (steps.py)
        resolution.ending.append((call, outcome, "TOOL_TIMEOUT"))
        result = hooked.tool_result(outcome, "TOOL_TIMEOUT")
        await ctx.services.hooks.after_tool_call(hooked.step_info(ctx), hooked.tool_call(call, tool), result)
        return
    await record_result(ctx, call, outcome, wait=False, tool=tool)


async def _write(
    ctx: RunContext,
    call: content_pb2.ToolCallBlock,
    tool: ToolInfo,
    arguments: dict[str, object],
    resolution: Resolution,
) -> None:
    await ctx.writer.settle()  # the step (and every result before) is durable before any write or confirmation
    if not await hooked.confirmed_before(ctx, call) and await _denied(ctx, call, tool):
        return  # denied before any confirmation was asked for
    # A write the agent's policy lets through (autonomous mode) is approved as it is proposed, and goes through
    # the ledger like any approved write: a crash mid-call never runs it silently twice.
    by_policy = not tool.needs_confirmation
    confirmation = await confirmation_for(ctx, call, tool, arguments, by_policy=by_policy)
    if confirmation.state == confirmation_pb2.CONFIRMATION_STATE_PENDING:
        await announce_request(ctx, confirmation)
        resolution.waiting.append(confirmation.id)
        return
    if confirmation.state not in DECIDED:
        cancelled = ToolOutcome("The confirmation was cancelled.", is_error=True)
        await record_result(ctx, call, cancelled, tool=tool, confirmation_id=confirmation.id)
        return
    if not by_policy:
        await announce_request(ctx, confirmation)  # no-op when written before
        await announce_decision(ctx, confirmation)
    if confirmation.state != confirmation_pb2.CONFIRMATION_STATE_APPROVED:
        await record_result(
            ctx, call, rejection(confirmation), reason="REJECTED", tool=tool, confirmation_id=confirmation.id
        )
        resolution.acknowledge.append(confirmation.id)
        return
    edited = confirmation.decision.edited_arguments_json
    chosen = parse_arguments(tool, edited, ctx) if edited else arguments
    if isinstance(chosen, str):
        invalid = ToolOutcome(chosen, is_error=True)
        await record_result(ctx, call, invalid, reason="INVALID_ARGUMENTS", tool=tool, confirmation_id=confirmation.id)
        resolution.acknowledge.append(confirmation.id)
        return
    with ctx.writing():  # the wall-clock limit waits for the write and its result (context.py)
        outcome = await ledger.execute(ctx, call, tool, confirmation, chosen, arguments_hash(json.dumps(chosen)))
        if outcome is None:  # outcome unknown: a new confirmation asks the user what to do
            resolution.acknowledge.append(confirmation.id)
            unknown = await ledger.outcome_unknown_confirmation(ctx, call, tool, confirmation)
            if unknown.state == confirmation_pb2.CONFIRMATION_STATE_PENDING:
                await announce_request(ctx, unknown)
                resolution.waiting.append(unknown.id)
                return
            await announce_decision(ctx, unknown)
            resolution.acknowledge.append(unknown.id)
            outcome = await ledger.resolve_unknown(ctx, call, tool, unknown, chosen)
        await record_result(ctx, call, outcome, tool=tool, confirmation_id=confirmation.id)
    resolution.acknowledge.append(confirmation.id)


async def resolve(ctx: RunContext, calls: list[content_pb2.ToolCallBlock], tools: dict[str, ToolInfo]) -> Resolution:
    """Give every call a result, or leave it waiting for a confirmation; see the module docstring."""
    resolution = Resolution()
    reads: list[asyncio.Task[None]] = []
    later: list[tuple[content_pb2.ToolCallBlock, ToolInfo, dict[str, object]]] = []  # writes and client tools
    try:
        for call in calls:
            tool = tools.get(call.name)
            if tool is None:
                unknown = ToolOutcome(f"There is no tool named {call.name}.", is_error=True)
                await record_result(ctx, call, unknown, wait=False)
                continue
            arguments = parse_arguments(tool, call.arguments_json, ctx)
            if isinstance(arguments, str):
                invalid = ToolOutcome(arguments, is_error=True)
                await record_result(ctx, call, invalid, reason="INVALID_ARGUMENTS", wait=False)
            elif tool.kind == Kind.READ:
                reads.append(asyncio.create_task(_read(ctx, call, tool, arguments, resolution)))
            else:
                later.append((call, tool, arguments))
        # The reads first: a read that times out ends the run, and nobody is then asked about the step's writes.
        await asyncio.gather(*reads)
    finally:
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    for call, tool, arguments in later:
        if resolution.timed_out:
            not_run = ToolOutcome(f"{call.name} was not run: the run reached its tool timeout.", is_error=True)
            resolution.ending.append((call, not_run, "NOT_RUN"))
        elif tool.kind == Kind.CLIENT:
            if await _denied(ctx, call, tool):
                continue
            requested = ev.ClientToolRequested(
                tool_call_id=call.id, tool_name=call.name, arguments_json=call.arguments_json
            )
            await append_once(
                ctx, ev.RunEvent(step=ctx.step_count, client_tool_requested=requested), f"{call.id}/client"
            )
            resolution.waiting_client.append(call.id)
        else:
            await _write(ctx, call, tool, arguments, resolution)
    return resolution
