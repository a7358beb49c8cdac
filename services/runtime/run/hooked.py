"""The hooks' payloads as a claim builds them, and the policy check every tool call passes (hooks.py).

`denied` is asked before anything is done for a call: a read before it runs, a write before its confirmation is
proposed, a client tool before it is requested. A denied call gets an error result the model reads ("denied by
policy", with the reason) and a `tool_call_failed` event (HOOK_DENIED, or HOOK_FAILED for a policy that raised or
answered neither None nor Deny). A write that already has a confirmation (a run resumed after the decision, or taken
over) is not put to the policy again (`confirmed_before`): the confirmation records what the policy let through and
what the person decided, and the ledger may already have run it; reads and client tools a resumed claim takes up are
asked again (a read runs again anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.runtime.hooks import Denial, ModelRequest, RunInfo, StepInfo, ToolCall, ToolResult
from services.runtime.run.context import RunContext
from services.runtime.tools.toolbox import ToolInfo, ToolOutcome
from steward import canonical
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb

MADE = (  # a confirmation in any of these states was made for its call (cancelled ones belong to ended runs)
    confirmation_pb2.CONFIRMATION_STATE_PENDING,
    confirmation_pb2.CONFIRMATION_STATE_APPROVED,
    confirmation_pb2.CONFIRMATION_STATE_REJECTED,
    confirmation_pb2.CONFIRMATION_STATE_EXPIRED,
)


def run_info(ctx: RunContext) -> RunInfo:
    return RunInfo(
        id=ctx.run_id,
        user_id=ctx.run.owner_id,
        agent_id=ctx.agent.id,
        conversation_id=ctx.run.conversation_id,
    )


def step_info(ctx: RunContext, number: int | None = None) -> StepInfo:
    """The step `number`, or (by default) the step whose tool calls the claim is resolving."""
    return StepInfo(
        run=run_info(ctx), number=ctx.step_count if number is None else number, model_route=ctx.agent.model_route
    )


def model_request(request: provider_pb.GenerateRequest) -> ModelRequest:
    return ModelRequest(
        model_route=request.route,
        message_count=len(request.messages),
        tool_names=tuple(tool.name for tool in request.tools),
        max_tokens=request.max_tokens,
    )


def tool_call(call: content_pb2.ToolCallBlock, tool: ToolInfo | None = None, *, confirmation_id: str = "") -> ToolCall:
    """The call as hooks see it; the arguments parsed when they are a JSON object (else empty)."""
    try:
        parsed = canonical.parse(call.arguments_json or "{}")
    except ValueError:
        parsed = None
    arguments: Mapping[str, object] = parsed if isinstance(parsed, dict) else {}
    return ToolCall(
        id=call.id,
        name=call.name,
        kind=tool.kind.value if tool is not None else "",
        arguments=arguments,
        arguments_json=call.arguments_json,
        confirmation_id=confirmation_id,
    )


def tool_result(outcome: ToolOutcome, reason: str = "") -> ToolResult:
    return ToolResult(
        content=outcome.content, is_error=outcome.is_error, reason=(reason or "TOOL_ERROR") if outcome.is_error else ""
    )


async def denied(ctx: RunContext, call: content_pb2.ToolCallBlock, tool: ToolInfo) -> Denial | None:
    """The hooks' denial of the call, or None when it may go on."""
    return await ctx.services.hooks.before_tool_call(step_info(ctx), tool_call(call, tool))


def denial_outcome(call: content_pb2.ToolCallBlock, denial: Denial) -> ToolOutcome:
    return ToolOutcome(denial.message(call.name), is_error=True)


async def confirmed_before(ctx: RunContext, call: content_pb2.ToolCallBlock) -> bool:
    """Whether the write already has a confirmation: only a call this claim took over can (one a step of this claim
    made cannot), so only those cost a look-up."""
    if ctx.step_count > ctx.run.step_count:
        return False
    token = ""
    while True:
        page = await ctx.services.confirm.ListConfirmations(
            confirm_pb.ListConfirmationsRequest(run_id=ctx.run_id, states=MADE, page_size=200, page_token=token)
        )
        if any(confirmation.tool_call_id == call.id for confirmation in page.confirmations):
            return True
        token = page.next_page_token
        if not token:
            return False
