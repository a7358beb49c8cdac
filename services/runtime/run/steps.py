"""Driving a claimed run from its checkpoint to its end or its next pause.

    loop:  tool calls owed a result?  → resolve them (tool_calls.py); pause if a person must decide
           a limit reached?           → end incomplete with its reason
           else                       → one model step; no tool calls in it → completed

The wall-clock limit counts the run's running time, summed over its claims (each write carries it to the
store; paused time does not count), and never interrupts an approved write (RunContext.writing). The
first-token timeout (from a step's model call to its first content: text, reasoning or a tool call) and a
read's tool timeout end the run incomplete (timeout) too. A step cut off by the provider going away is tried again
with backoff until the provider has been away `outage.OUTAGE_BOUND` (then the run is given back, not failed); one
that failed with the provider's own transient error is restarted at most `STEP_RESTARTS` times (the provider
itself already retried and fell back before any content). A try that had sent content is followed by
`step_restarted`, which tells readers to drop that step's partial output.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import structlog

from services.runtime.hooks import ModelResponse
from services.runtime.run import hooked, model_step, outage, params
from services.runtime.run.confirmations import acknowledge, cancel_confirmations
from services.runtime.run.context import RunContext, StartMode
from services.runtime.run.history import pending_calls, read_history
from services.runtime.run.tool_calls import resolve, result_parts
from services.runtime.settings import RuntimeSettings
from services.runtime.tools import client
from services.runtime.tools.toolbox import ToolInfo
from steward.common.v1 import content_pb2
from steward.errors import Reason, StewardError
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)

STEP_RESTARTS = 2
# The output tokens a step asks for when the agent sets none (the default of the deployment's setting).
MAX_OUTPUT_TOKENS = RuntimeSettings.model_fields["default_max_output_tokens"].default
DEFAULT_CACHE_KEY = "default-agent"  # the caching hint's key for the deployment's default agent (it has no id)
# How a run ends: its state and, when incomplete, the reason.
Ending = tuple[run_pb2.RunState.ValueType, run_pb2.IncompleteReason.ValueType]


async def drive(ctx: RunContext, how: StartMode, history: list[content_pb2.ChatMessage] | None = None) -> list[str]:
    """Run from the checkpoint until the run ends or pauses (see the module docstring); the ids of the
    confirmations a paused run waits for. `history`: the conversation's messages, when the caller knows them (a
    run it just created with its conversation)."""
    await _opening_event(ctx, how)
    # The wall-clock limit counts the run's running time over all its claims (paused time does not count), on the
    # clock the claim's writes carry.
    left = ctx.limits.timeout - ctx.writer.running_ms() / 1000
    try:
        async with asyncio.timeout(max(0.0, left)) as wall_clock:
            ctx.wall_clock = wall_clock
            return await _loop(ctx, history)
    except TimeoutError:
        if ctx.writer.last_write_made:  # time ran out while the run was ending or pausing: that write stands
            await ctx.writer.settle()
            return []
        await finish(ctx, run_pb2.RUN_STATE_INCOMPLETE, incomplete=run_pb2.INCOMPLETE_REASON_TIMEOUT)
        return []


async def _opening_event(ctx: RunContext, how: StartMode) -> None:
    if how is StartMode.RESUME:
        event = ev.RunEvent(run_resumed=ev.RunResumed(agent_version=ctx.agent.version))
    elif ctx.run.last_event_seq > 0:
        # Claimed from a replica that stopped mid-step: readers drop that step's partial output.
        event = ev.RunEvent(step=ctx.step_count + 1, step_restarted=ev.StepRestarted(lease_epoch=ctx.epoch))
    else:
        started = ev.RunStarted(
            agent_id=ctx.agent.id, model_route=ctx.agent.model_route, agent_version=ctx.agent.version
        )
        event = ev.RunEvent(run_started=started)
    ctx.writer.later(event)  # with the first write that follows


async def _loop(ctx: RunContext, history: list[content_pb2.ChatMessage] | None) -> list[str]:
    tools = {tool.name: tool for tool in await ctx.services.toolbox.tools_for(ctx.agent, ctx.mode)}
    tools.update((tool.name, tool) for tool in client.infos(ctx.run))
    if history is None:
        history = await read_history(ctx.services.conversations, ctx.run.conversation_id)
    ctx.history = history
    while True:
        messages = ctx.history
        pending = pending_calls(messages)
        if pending.calls:
            resolution = await resolve(ctx, pending.calls, tools)
            await acknowledge(ctx, resolution.acknowledge)
            if resolution.timed_out:  # a limit: the step's results that are owed are written with the end
                parts = [result_parts(ctx, call, outcome, reason) for call, outcome, reason in resolution.ending]
                await finish(
                    ctx,
                    run_pb2.RUN_STATE_INCOMPLETE,
                    incomplete=run_pb2.INCOMPLETE_REASON_TIMEOUT,
                    results=parts,
                )
                return []
            if resolution.waiting or resolution.waiting_client:
                awaiting = (
                    run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION
                    if resolution.waiting
                    else run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
                )
                await pause(ctx, awaiting)
                return resolution.waiting
            continue
        limit = _limit_reached(ctx)
        if limit:
            await finish(ctx, run_pb2.RUN_STATE_INCOMPLETE, incomplete=limit)
            return []
        result = await _step(ctx, messages, list(tools.values()))
        if result is None:
            return []
        ending = _ending(result)
        await _checkpoint_step(ctx, result, ending)
        if ending is not None:
            return []


def _ending(result: model_step.StepResult) -> Ending | None:
    """How a step ends the run (state, incomplete reason), or None when the run goes on with its tool calls."""
    if result.stop_reason == provider_pb.STOP_REASON_MAX_TOKENS and result.capped:
        # The output was cut short by a limit of the agent or run (params.py), not by the model.
        return run_pb2.RUN_STATE_INCOMPLETE, run_pb2.INCOMPLETE_REASON_MAX_TOKENS
    if not result.tool_calls:
        return run_pb2.RUN_STATE_COMPLETED, run_pb2.INCOMPLETE_REASON_UNSPECIFIED
    return None


def _limit_reached(ctx: RunContext) -> run_pb2.IncompleteReason.ValueType:
    limits = ctx.limits
    if ctx.step_count >= limits.max_steps:
        return run_pb2.INCOMPLETE_REASON_MAX_STEPS
    tokens = ctx.usage.input_tokens + ctx.usage.output_tokens
    if limits.max_tokens and tokens >= limits.max_tokens:
        return run_pb2.INCOMPLETE_REASON_MAX_TOKENS
    if limits.max_cost_micros and ctx.usage.cost_micros >= limits.max_cost_micros:
        return run_pb2.INCOMPLETE_REASON_BUDGET
    return run_pb2.INCOMPLETE_REASON_UNSPECIFIED


def step_stop_reason(stop: provider_pb.StopReason.ValueType) -> run_pb2.StopReason.ValueType:
    """The provider's stop reason as the run's (the same names); unspecified for one the run does not know."""
    name = provider_pb.StopReason.Name(stop) if stop in provider_pb.StopReason.values() else ""
    known = name in run_pb2.StopReason.DESCRIPTOR.values_by_name
    return run_pb2.StopReason.Value(name) if known else run_pb2.STOP_REASON_UNSPECIFIED


def _request(
    ctx: RunContext, messages: list[content_pb2.ChatMessage], tools: list[ToolInfo], step: int
) -> tuple[provider_pb.GenerateRequest, bool]:
    """The step's Generate request, and whether its max_tokens is a limit of the agent or run (params.py)."""
    tuned = params.step_params(ctx.agent, ctx.limits, ctx.usage, ctx.services.settings.default_max_output_tokens)
    request = provider_pb.GenerateRequest(
        route=ctx.agent.model_route,
        system=ctx.agent.system_prompt,
        messages=messages,
        tools=[
            content_pb2.ToolSpec(name=t.name, description=t.description, input_schema_json=t.input_schema_json)
            for t in tools
        ],
        max_tokens=tuned.max_tokens,
        reasoning_budget_tokens=tuned.reasoning_budget_tokens,
        run_id=ctx.run_id,
        agent_id=ctx.agent.id,
        step=step,
        request_id=f"{ctx.run_id}/{ctx.epoch}/{step}",
        prompt_cache=_cache_hint(ctx),
    )
    if tuned.temperature is not None:
        request.temperature = tuned.temperature
    return request, tuned.capped


def _cache_hint(ctx: RunContext) -> provider_pb.PromptCacheHint | None:
    """The caching hint, unless the agent turned caching off (unset is on): the system prompt and the tools are the
    cached prefix, keyed by the agent (the provider translates it per upstream, or ignores it; ADR 0022)."""
    params = ctx.agent.model_params
    if params.HasField("prompt_caching") and not params.prompt_caching:
        return None
    return provider_pb.PromptCacheHint(prefix_messages=0, cache_key=ctx.agent.id or DEFAULT_CACHE_KEY)


async def _step(
    ctx: RunContext, messages: list[content_pb2.ChatMessage], tools: list[ToolInfo]
) -> model_step.StepResult | None:
    """One model step, not yet checkpointed (see `_checkpoint_step`); None when the run ended instead (budget, or
    no content within the first-token timeout). A try that fails and may pass (outage.py) is made again: the provider
    away, after a backoff, until it has been away `outage.OUTAGE_BOUND` (then its error goes up as it is, and the
    claim gives the run back); the provider's own transient errors at once, at most `STEP_RESTARTS` times. A try
    that had sent content to the log is followed by `step_restarted`, so that readers drop it."""
    step = ctx.step_count + 1
    restarts = 0
    away = outage.Outage()
    announce = True
    while True:
        if announce:
            # Goes with the writer's next write (the claim's first text delta is written at once, later ones within
            # the flush interval) or after the flush interval: one write fewer per step. The writer keeps the log's
            # order, and a failed write fails the next.
            ctx.writer.later(ev.RunEvent(step=step, step_started=ev.StepStarted(model_route=ctx.agent.model_route)))
            announce = False
        request, capped = _request(ctx, messages, tools, step)
        hook_step = hooked.step_info(ctx, step)
        await ctx.services.hooks.before_model_call(hook_step, hooked.model_request(request))
        progress = model_step.Progress()
        try:
            result = await model_step.run_step(
                ctx.services.provider,
                request,
                ctx.writer,
                first_token_timeout=ctx.limits.first_token_timeout,
                progress=progress,
            )
        except StewardError as error:
            await ctx.services.hooks.after_model_call(hook_step, ModelResponse(0, error.reason))
            if ctx.writer.error is not None:  # the store's failure, met within the step: the claim judges it
                raise ctx.writer.error from error
            if error.reason == Reason.BUDGET_EXCEEDED:
                await finish(ctx, run_pb2.RUN_STATE_INCOMPLETE, incomplete=run_pb2.INCOMPLETE_REASON_BUDGET)
                return None
            if progress.content:
                away.over()  # the provider was there: a later failure starts a new outage
            fault = outage.classify(error, idempotent=False)  # a Generate made again may be charged again
            wait = _retry_wait(fault, error, away, restarts)
            if wait is None:
                raise model_step.StepError.of(error) from error
            restarts += fault is outage.Fault.PASSING
            log.info("step_restarting", step=step, reason=error.reason, wait=round(wait, 2))
            # Readers drop a step's partial text at a restart; and a client is told once per outage that the step
            # waits for the provider ("waiting for the model service"), content or not.
            waiting = fault is outage.Fault.OUTAGE and away.began
            if progress.content or waiting:
                restarted = ev.StepRestarted(
                    lease_epoch=ctx.epoch, reason=error.reason, dependency="provider" if waiting else ""
                )
                await ctx.writer.emit(ev.RunEvent(step=step, step_restarted=restarted))
                announce = progress.content
            await asyncio.sleep(wait)  # cancel and the wall-clock limit end it like any other wait
            continue
        except TimeoutError:  # a limit, not a failure: the run ends incomplete (timeout), the step is not retried
            await ctx.services.hooks.after_model_call(hook_step, ModelResponse(0, "FIRST_TOKEN_TIMEOUT"))
            log.info("first_token_timeout", step=step, seconds=ctx.limits.first_token_timeout)
            await finish(ctx, run_pb2.RUN_STATE_INCOMPLETE, incomplete=run_pb2.INCOMPLETE_REASON_TIMEOUT)
            return None
        await ctx.services.hooks.after_model_call(hook_step, ModelResponse(len(result.tool_calls)))
        result.capped = capped
        return result


def _retry_wait(fault: outage.Fault, error: StewardError, away: outage.Outage, restarts: int) -> float | None:
    """Seconds before the step is tried again after `error`, or None when the step fails (a StepError fails the
    run). The provider away too long raises its error as it is: not a step's failure, the claim gives the run back."""
    if fault is outage.Fault.PASSING:
        return 0.0 if restarts < STEP_RESTARTS else None
    if fault is outage.Fault.OUTAGE:
        wait = away.next_wait()
        if wait is None:
            log.warning("provider_away", seconds=outage.OUTAGE_BOUND, reason=error.reason)
            raise error
        return wait
    return None


async def _checkpoint_step(ctx: RunContext, result: model_step.StepResult, ending: Ending | None) -> None:
    """Checkpoint a model step: its assistant message, its events and usage. A step that ends the run carries the
    end in the same write (the message id is minted here so that the end event can name it) and is waited for; one
    that goes on to its tool calls is not (writer.py: what needs it durable settles the writer first)."""
    step = ctx.step_count + 1
    model_step.add_usage(ctx.usage, result.usage)
    message_id = str(uuid.uuid4()) if result.message.content else ""
    stop = step_stop_reason(result.stop_reason)
    usage = ev.UsageReported(usage=result.usage, run_total=ctx.usage, stop_reason=stop)
    request = store_pb.CheckpointRunRequest(
        run_id=ctx.run_id,
        lease_epoch=ctx.epoch,
        messages=[result.message] if message_id else [],
        message_ids=[message_id] if message_id else [],
        events=[ev.RunEvent(step=step, usage=usage)],
        step_count=step,
        usage=ctx.usage,
        request_id=f"{ctx.run_id}/{ctx.epoch}/step/{step}",
        stop_reason=stop,
    )
    ctx.step_count = step
    if ending is None:
        ctx.checkpoint_soon(request)
        return
    state, incomplete = ending
    request.events.append(_end_event(state, incomplete, message_id, stop))
    request.state, request.incomplete_reason = state, incomplete
    await ctx.checkpoint(request)
    await _ended(ctx, state)


async def pause(ctx: RunContext, reason: run_pb2.PauseReason.ValueType) -> None:
    """Wait for a person or the caller: checkpoint paused (which gives up the lease), with the pause's deadline
    (ADR 0018: past it, a sweep ends the run expired) in the run and in the run_paused event."""
    paused = ev.RunPaused(reason=reason)
    request = store_pb.CheckpointRunRequest(
        run_id=ctx.run_id,
        lease_epoch=ctx.epoch,
        state=run_pb2.RUN_STATE_PAUSED,
        pause_reason=reason,
        request_id=f"{ctx.run_id}/{ctx.epoch}/paused",
    )
    timeout = ctx.limits.pause_timeout(reason)
    if timeout > 0:
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        paused.expire_time.FromDatetime(deadline)
        request.pause_expire_time.FromDatetime(deadline)
        ctx.pause_timeout = timeout
    request.events.append(ev.RunEvent(run_paused=paused))
    await ctx.checkpoint(request)
    log.info("run_paused", steps=ctx.step_count, pause_timeout=timeout or None)


async def finish(
    ctx: RunContext,
    state: run_pb2.RunState.ValueType,
    *,
    incomplete: run_pb2.IncompleteReason.ValueType = run_pb2.INCOMPLETE_REASON_UNSPECIFIED,
    results: Sequence[tuple[content_pb2.ChatMessage, ev.RunEvent]] = (),
) -> None:
    """End the run between steps: completed or incomplete (with its limit); `results` (tool messages and their
    events) go in the same checkpoint, before the end."""
    await ctx.checkpoint(
        store_pb.CheckpointRunRequest(
            run_id=ctx.run_id,
            lease_epoch=ctx.epoch,
            messages=[message for message, _ in results],
            events=[*(event for _, event in results), _end_event(state, incomplete, "")],
            state=state,
            incomplete_reason=incomplete,
            step_count=ctx.step_count,
            usage=ctx.usage,
            request_id=f"{ctx.run_id}/{ctx.epoch}/end",
        ),
    )
    await _ended(ctx, state)


def _end_event(
    state: run_pb2.RunState.ValueType,
    incomplete: run_pb2.IncompleteReason.ValueType,
    message_id: str,
    stop: run_pb2.StopReason.ValueType = run_pb2.STOP_REASON_UNSPECIFIED,
) -> ev.RunEvent:
    """The run's end event; `stop`: why the model stopped in the step that ended it (none between steps)."""
    if state == run_pb2.RUN_STATE_COMPLETED:
        return ev.RunEvent(run_completed=ev.RunCompleted(message_id=message_id, stop_reason=stop))
    return ev.RunEvent(run_incomplete=ev.RunIncomplete(reason=incomplete, stop_reason=stop))


async def _ended(ctx: RunContext, state: run_pb2.RunState.ValueType) -> None:
    if state != run_pb2.RUN_STATE_COMPLETED:
        await cancel_confirmations(ctx.services, ctx.run_id)
    log.info("run_ended", state=run_pb2.RunState.Name(state), steps=ctx.step_count)
