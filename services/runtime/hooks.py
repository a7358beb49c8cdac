"""Hooks: the plugin interface around the loop, its payloads, and the built-in audit log.

A hook sees every model call before and after it, every tool call before anything is done for it, when it starts
and once its result is known, and every run event as it is written (the event tap). Hooks observe, with one
exception: `before_tool_call` may deny the call (`Deny`), and then nothing is done for it: no confirmation is asked,
nothing runs, the model reads that the call was denied by policy, and the run's log has a `tool_call_failed` with
reason `HOOK_DENIED`. A policy that raises denies the call too (fail closed, reason `HOOK_FAILED`); a hook that
raises anywhere else is logged and skipped, never fatal to the run.

The payloads are frozen dataclasses, stable: fields are added, never renamed or removed. Hooks are configured by
`STEWARD_HOOKS` (hook_loading.py); docs/hooks.md is the guide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from steward.store.v1 import run_event_pb2 as ev

log = structlog.get_logger(__name__)

# The reasons of the `tool_call_failed` event of a call a hook stopped.
HOOK_DENIED = "HOOK_DENIED"  # a hook's before_tool_call answered Deny
HOOK_FAILED = "HOOK_FAILED"  # a hook's before_tool_call raised: the call is denied (fail closed)


@dataclass(frozen=True)
class RunInfo:
    """The run a callback is about."""

    id: str
    user_id: str  # the run's owner
    agent_id: str  # empty for the built-in default agent
    conversation_id: str


@dataclass(frozen=True)
class StepInfo:
    """One model step of a run: the model call, and the tool calls it made."""

    run: RunInfo
    number: int  # 1 for the run's first step
    model_route: str


@dataclass(frozen=True)
class ModelRequest:
    """What a step asks of the model, summarised (never the messages themselves)."""

    model_route: str
    message_count: int  # the conversation's messages sent, the system prompt not counted
    tool_names: tuple[str, ...]  # the tools offered, qualified ("notes.create_note")
    max_tokens: int  # the most output tokens asked for


@dataclass(frozen=True)
class ModelResponse:
    """How a model call ended."""

    tool_calls: int  # how many tool calls the model made
    error: str = ""  # the stable reason of a call that failed (or FIRST_TOKEN_TIMEOUT); empty when it succeeded


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model made it."""

    id: str
    name: str  # qualified ("notes.create_note"), as the runtime names the tool
    kind: str  # "read", "write" or "client"; empty for a tool the agent does not have
    arguments: Mapping[str, object]  # parsed; empty when arguments_json is not a JSON object
    arguments_json: str  # as the model sent them
    confirmation_id: str = ""  # a write's confirmation, once it has one (on_tool_call_start, after_tool_call)


@dataclass(frozen=True)
class ToolResult:
    """A tool call's result, as the model reads it."""

    content: str
    is_error: bool
    reason: str = ""  # for an error: the stable reason of its tool_call_failed event ("TOOL_ERROR", "HOOK_DENIED", ...)


@dataclass(frozen=True)
class Deny:
    """before_tool_call's answer that stops a call; `reason` is told to the model and written to the run's log."""

    reason: str


@dataclass(frozen=True)
class Denial:
    """A call the hooks stopped: which hook, why, and the reason code of its event (HOOK_DENIED or HOOK_FAILED)."""

    hook: str
    reason: str
    code: str

    def message(self, tool_name: str) -> str:
        """What the model reads as the call's result."""
        return f"The call to {tool_name} was denied by policy ({self.hook}): {self.reason}"


class Hook:
    """Override what you need; every method does nothing (and denies nothing) by default."""

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        return None

    async def after_model_call(self, step: StepInfo, response: ModelResponse) -> None:
        return None

    async def before_tool_call(self, step: StepInfo, call: ToolCall) -> Deny | None:
        """Before anything is done for the call (a read run, a write's confirmation asked, a client tool requested);
        Deny(reason) stops it. A write that has its confirmation already (a resumed run) is not asked again."""
        return None

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        """Just before the tool is called (a write: once approved, with its confirmation id)."""
        return None

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        return None

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        """Each event of the run's log once it is durable, with its seq, in order."""
        return None


class AuditLog(Hook):
    """Logs every model call, tool call and state-changing event (not deltas) as structured lines."""

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        log.info(
            "audit_model_call",
            run_id=step.run.id,
            user_id=step.run.user_id,
            step=step.number,
            model_route=request.model_route,
            messages=request.message_count,
            tools=len(request.tool_names),
        )

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        log.info(
            "audit_tool_call",
            run_id=step.run.id,
            user_id=step.run.user_id,
            tool_call_id=call.id,
            tool=call.name,
            is_error=result.is_error,
            reason=result.reason,
        )

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind not in ("text_delta", "reasoning_delta"):
            log.info("audit_run_event", run_id=run_id, kind=kind, seq=event.seq)


def hook_name(hook: Hook) -> str:
    return type(hook).__name__


class Hooks:
    """Calls every hook in order. An observing callback that raises is logged and skipped; a before_tool_call that
    raises denies the call (fail closed), and the first denial stops the call: later hooks are not asked."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self._hooks = list(hooks)

    @property
    def hooks(self) -> tuple[Hook, ...]:
        return tuple(self._hooks)

    async def _each(self, name: str, *args: object) -> None:
        for hook in self._hooks:
            try:
                await getattr(hook, name)(*args)
            except Exception:
                log.exception("hook_failed", hook=hook_name(hook), method=name)

    async def before_model_call(self, step: StepInfo, request: ModelRequest) -> None:
        await self._each("before_model_call", step, request)

    async def after_model_call(self, step: StepInfo, response: ModelResponse) -> None:
        await self._each("after_model_call", step, response)

    async def before_tool_call(self, step: StepInfo, call: ToolCall) -> Denial | None:
        for hook in self._hooks:
            try:
                answer = await hook.before_tool_call(step, call)
            except Exception:
                log.exception("hook_failed", hook=hook_name(hook), method="before_tool_call", tool=call.name)
                return Denial(hook_name(hook), "the policy check failed", HOOK_FAILED)
            if isinstance(answer, Deny):
                log.info("tool_call_denied", hook=hook_name(hook), tool=call.name, reason=answer.reason)
                return Denial(hook_name(hook), answer.reason, HOOK_DENIED)
            if answer is not None:  # neither allowed nor denied: a policy that does not say yes says no
                log.error("hook_answer_invalid", hook=hook_name(hook), tool=call.name, answer=type(answer).__name__)
                return Denial(hook_name(hook), "the policy check failed", HOOK_FAILED)
        return None

    async def on_tool_call_start(self, step: StepInfo, call: ToolCall) -> None:
        await self._each("on_tool_call_start", step, call)

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        await self._each("after_tool_call", step, call, result)

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        await self._each("on_event", run_id, event)
